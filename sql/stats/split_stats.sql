-- name: split_stats
-- description: Studies, images, patients and mean report tokens per section, per dataset and split
--   (the shape of ReXGradient-160K's Table 1). Computed on every row, never a sample. Mean tokens
--   are over the reports that have the section. A dataset with no images of its own (CheXpert Plus: its
--   studies' images are CheXpert's) counts the images of its studies in the dataset they belong to.
-- parameters: none
WITH study_counts AS (
    SELECT dataset, split, count(*) AS studies, count(DISTINCT patient_id) AS patients
    FROM studies GROUP BY ALL
), image_counts AS (
    SELECT dataset, split, count(*) AS images FROM images GROUP BY ALL
    UNION ALL
    SELECT s.dataset, s.split, count(*) AS images
    FROM studies s JOIN images i ON i.study_id = s.study_id AND i.dataset <> s.dataset
    WHERE s.dataset NOT IN (SELECT DISTINCT dataset FROM images)
    GROUP BY ALL
), report_stats AS (
    SELECT s.dataset, s.split, count(*) AS reports,
           avg(r.tokens_indication) AS mean_tokens_indication,
           avg(r.tokens_comparison) AS mean_tokens_comparison,
           avg(r.tokens_findings) AS mean_tokens_findings,
           avg(r.tokens_impression) AS mean_tokens_impression
    FROM reports r JOIN studies s USING (dataset, study_id)
    GROUP BY ALL
)
SELECT dataset, split, studies, coalesce(images, 0) AS images, patients, coalesce(reports, 0) AS reports,
       mean_tokens_indication, mean_tokens_comparison, mean_tokens_findings, mean_tokens_impression
FROM study_counts
LEFT JOIN image_counts USING (dataset, split)
LEFT JOIN report_stats USING (dataset, split)
ORDER BY dataset, CASE split WHEN 'train' THEN 1 WHEN 'valid' THEN 2 WHEN 'test' THEN 3 ELSE 4 END
