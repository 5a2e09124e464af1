-- name: split_stats
-- description: Studies, images, patients and mean report tokens per section, per dataset and split
--   (the shape of ReXGradient-160K's Table 1). Computed on every row, never a sample. Mean tokens
--   are over the reports that have the section. A dataset that links to another and has no images of its
--   own (CheXpert Plus: its studies' images are CheXpert's) counts the linked dataset's images of its studies.
-- parameters: dataset, linked
WITH study_counts AS (
    SELECT dataset, split, count(*) AS studies, count(DISTINCT patient_id) AS patients
    FROM studies GROUP BY ALL
), described_images AS (
    SELECT image_id, study_id FROM images WHERE dataset = $dataset
    UNION ALL
    SELECT image_id, study_id FROM images
    WHERE dataset = $linked AND NOT EXISTS (SELECT 1 FROM images WHERE dataset = $dataset)
), image_counts AS (
    SELECT s.dataset, s.split, count(*) AS images
    FROM described_images i JOIN studies s ON s.study_id = i.study_id AND s.dataset = $dataset
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
