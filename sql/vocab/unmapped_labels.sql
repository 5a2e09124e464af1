-- name: unmapped_labels
-- description: Every raw label that maps to no finding of the vocabulary (labels.finding IS NULL), per dataset
--   and labeler, with its label rows (and how many are positive), studies and images (0 for study-level
--   labels). Deliberate ones have an empty finding and a note in finding_map; the rest are gaps of the map.
--   The catalog publishes this query's result as catalog_unmapped_labels.
-- parameters: none
SELECT dataset, labeler, raw_label,
       count(*) AS label_rows,
       count(*) FILTER (WHERE value = 1) AS positive_rows,
       count(DISTINCT study_id) AS studies,
       count(DISTINCT image_id) AS images
FROM labels
WHERE finding IS NULL
GROUP BY dataset, labeler, raw_label
ORDER BY dataset, label_rows DESC, labeler, raw_label
