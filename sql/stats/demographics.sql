-- name: demographics
-- description: Per dataset, split, attribute and bucket: patients, studies and percent (the shape of
--   ReXGradient-160K's Table 2). Age is per study (age at that study), so age buckets report the share of
--   the split's studies; sex, race and ethnicity are per patient and report the share of its patients.
--   Computed on every row. Missing values form their own 'unknown' bucket rather than being dropped.
-- parameters: none
WITH study_people AS (
    SELECT s.dataset, s.split, s.study_id, s.patient_id, s.age_years, p.sex, p.race, p.ethnicity
    FROM studies s LEFT JOIN patients p USING (dataset, patient_id)
), split_totals AS (
    SELECT dataset, split, count(*) AS studies, count(DISTINCT patient_id) AS patients
    FROM study_people GROUP BY ALL
), ages AS (
    SELECT dataset, split, 'age_bucket' AS attribute,
           CASE WHEN age_years IS NULL THEN 'unknown' WHEN age_years < 20 THEN '0-20' WHEN age_years < 40 THEN '20-40'
                WHEN age_years < 60 THEN '40-60' WHEN age_years < 80 THEN '60-80' ELSE '80+' END AS bucket,
           count(DISTINCT patient_id) AS n_patients, count(*) AS n_studies
    FROM study_people GROUP BY ALL
), people AS (
    SELECT dataset, split, attribute, coalesce(value, 'unknown') AS bucket,
           count(DISTINCT patient_id) AS n_patients, count(DISTINCT study_id) AS n_studies
    FROM study_people
    UNPIVOT INCLUDE NULLS (value FOR attribute IN (sex, race, ethnicity))
    GROUP BY ALL
)
SELECT b.dataset, b.split, b.attribute, b.bucket, b.n_patients, b.n_studies,
       round(100.0 * CASE WHEN b.attribute = 'age_bucket' THEN b.n_studies / t.studies
                          ELSE b.n_patients / t.patients END, 2) AS percent
FROM (SELECT * FROM ages UNION ALL SELECT * FROM people) b
JOIN split_totals t USING (dataset, split)
ORDER BY b.dataset, b.split, b.attribute, b.bucket
