-- name: demographics
-- description: Per dataset, split, attribute and bucket: patients, studies and percent (the shape of
--   ReXGradient-160K's Table 2). Age is per study (age at that study), so age buckets report the share of
--   the split's studies; sex, race and ethnicity are per patient and report the share of its patients.
--   Computed on every row. What the source does not record at all is the bucket 'not_recorded' (race and
--   ethnicity: the harmonized word; sex and age: no patient / study of the dataset has a sex_source /
--   age_source); a field the source has but leaves unknown or unreadable is 'unknown' (sex 'U').
--   A dataset that links to another (MIMIC-Ext-CXR-QBA to MIMIC-CXR) takes its studies' ages and its
--   patients' sex, race and ethnicity from the linked dataset when its own say nothing (as image_labels).
-- parameters: dataset, linked
WITH own AS (
    SELECT * FROM studies WHERE dataset = $dataset
), linked_studies AS (
    SELECT study_id, age_years, age_source FROM studies WHERE dataset = $linked
), pats AS (
    SELECT * FROM patients WHERE dataset IN ($dataset, $linked)
    QUALIFY row_number() OVER (PARTITION BY patient_id
                               ORDER BY (sex <> 'U' OR coalesce(race, 'not_recorded') <> 'not_recorded') DESC,
                                        dataset = $dataset DESC) = 1
), study_people AS (
    SELECT s.dataset, s.split, s.study_id, s.patient_id,
           coalesce(s.age_years, l.age_years) AS age_years, coalesce(s.age_source, l.age_source) AS age_source,
           p.sex, p.sex_source,
           coalesce(p.race, 'not_recorded') AS race, coalesce(p.ethnicity, 'not_recorded') AS ethnicity
    FROM own s
    LEFT JOIN linked_studies l ON l.study_id = s.study_id
    LEFT JOIN pats p ON p.patient_id = s.patient_id
), recorded AS (
    SELECT dataset, bool_or(age_source IS NOT NULL) AS has_age, bool_or(sex_source IS NOT NULL OR sex <> 'U') AS has_sex
    FROM study_people GROUP BY ALL
), split_totals AS (
    SELECT dataset, split, count(*) AS studies, count(DISTINCT patient_id) AS patients
    FROM study_people GROUP BY ALL
), ages AS (
    SELECT dataset, split, 'age_bucket' AS attribute,
           CASE WHEN age_years IS NULL AND NOT r.has_age THEN 'not_recorded'
                WHEN age_years IS NULL THEN 'unknown' WHEN age_years < 20 THEN '0-20' WHEN age_years < 40 THEN '20-40'
                WHEN age_years < 60 THEN '40-60' WHEN age_years < 80 THEN '60-80' ELSE '80+' END AS bucket,
           count(DISTINCT patient_id) AS n_patients, count(*) AS n_studies
    FROM study_people JOIN recorded r USING (dataset) GROUP BY ALL
), people AS (
    SELECT dataset, split, attribute, coalesce(value, 'unknown') AS bucket,
           count(DISTINCT patient_id) AS n_patients, count(DISTINCT study_id) AS n_studies
    FROM (SELECT sp.dataset, sp.split, sp.patient_id, sp.study_id,
                 CASE WHEN sp.sex = 'U' AND NOT r.has_sex THEN 'not_recorded' ELSE sp.sex END AS sex,
                 sp.race, sp.ethnicity
          FROM study_people sp JOIN recorded r USING (dataset))
    UNPIVOT INCLUDE NULLS (value FOR attribute IN (sex, race, ethnicity))
    GROUP BY ALL
)
SELECT b.dataset, b.split, b.attribute, b.bucket, b.n_patients, b.n_studies,
       round(100.0 * CASE WHEN b.attribute = 'age_bucket' THEN b.n_studies / t.studies
                          ELSE b.n_patients / t.patients END, 2) AS percent
FROM (SELECT * FROM ages UNION ALL SELECT * FROM people) b
JOIN split_totals t USING (dataset, split)
ORDER BY b.dataset, b.split, b.attribute, b.bucket
