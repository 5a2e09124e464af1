-- name: view_mix
-- description: Per dataset and split: images per harmonized view position (UNKNOWN when the source does
--   not say). Computed on every row.
-- parameters: datasets
SELECT dataset, split, coalesce(view_position, 'UNKNOWN') AS view_position, count(*) AS images
FROM images WHERE list_contains($datasets, dataset)
GROUP BY ALL ORDER BY ALL
