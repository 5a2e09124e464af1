-- name: age_histogram
-- description: Per dataset and split: studies per five-year age bin (age_from = 0, 5, …, 95 for 95 and over),
--   with the studies that have no age as the bin age_from NULL (their count is the coverage beside the chart).
--   A dataset that links to another takes a study's age from the linked dataset when its own has none, as
--   the demographics table does. Computed on every row.
-- parameters: datasets
WITH own AS (
    SELECT s.dataset, s.split, s.study_id, s.age_years, d.links_to
    FROM studies s JOIN catalog_datasets d USING (dataset)
    WHERE list_contains($datasets, s.dataset)
), aged AS (
    SELECT o.dataset, o.split, coalesce(o.age_years, x.age_years) AS age
    FROM own o LEFT JOIN studies x ON x.dataset = o.links_to AND x.study_id = o.study_id
)
SELECT dataset, split, least(floor(age / 5) * 5, 95)::INTEGER AS age_from, count(*) AS studies
FROM aged GROUP BY ALL ORDER BY ALL
