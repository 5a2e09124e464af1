-- name: label_prevalence
-- description: Per dataset, labeler, finding and split: images labelled for the finding, and how many of them
--   are positive, uncertain and negative. Per image (a study's label counts for each of its images, as in
--   image_labels); with several readers an image is positive when any reader says so, else uncertain when any
--   is uncertain. `images_labelled_by_labeler` counts the split's images with any label of that labeler, so
--   the images it leaves unlabelled are the split's images minus it. Raw labels that map to no finding are
--   left out. Computed on every row.
-- parameters: datasets
WITH per_image AS (
    SELECT dataset, labeler, finding, split, image_id,
           CASE WHEN bool_or(value = 1) THEN 1 WHEN bool_or(value = -1) THEN -1 ELSE 0 END AS value
    FROM image_labels
    WHERE list_contains($datasets, dataset) AND finding IS NOT NULL
    GROUP BY ALL
), by_labeler AS (
    SELECT dataset, labeler, split, count(DISTINCT image_id) AS images_labelled_by_labeler
    FROM per_image GROUP BY ALL
)
SELECT p.dataset, p.labeler, p.finding, p.split, count(*) AS images_labelled,
       count(*) FILTER (WHERE value = 1) AS positive, count(*) FILTER (WHERE value = -1) AS uncertain,
       count(*) FILTER (WHERE value = 0) AS negative, any_value(b.images_labelled_by_labeler) AS images_labelled_by_labeler
FROM per_image p JOIN by_labeler b USING (dataset, labeler, split)
GROUP BY ALL
ORDER BY ALL
