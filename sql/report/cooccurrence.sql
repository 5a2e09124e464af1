-- name: cooccurrence
-- description: Per dataset and labeler: images positive for both findings of a pair (finding_a = finding_b
--   gives the images positive for that finding). Per image, over all splits, any reader's positive counts.
--   Computed on every row.
-- parameters: datasets
WITH positive AS (
    SELECT DISTINCT dataset, labeler, finding, image_id
    FROM image_labels
    WHERE list_contains($datasets, dataset) AND finding IS NOT NULL AND value = 1
)
SELECT a.dataset, a.labeler, a.finding AS finding_a, b.finding AS finding_b, count(*) AS images
FROM positive a JOIN positive b ON a.dataset = b.dataset AND a.labeler = b.labeler AND a.image_id = b.image_id
GROUP BY ALL
ORDER BY ALL
