-- name: balanced_evaluation
-- description: A sex- and age-balanced evaluation set of patients: patients of known sex and age with a
--   frontal image, then at most `per_stratum` patients in each sex x age-bucket stratum (0-20 … 80+),
--   chosen by a seeded hash of the patient id, so the same parameters pick the same patients.
-- unit: patient
-- param: per_stratum INTEGER = 50  -- patients kept per (sex, age bucket)
-- param: seed INTEGER = 0  -- which patients a stratum keeps
-- param: datasets DATASET[] = NULL  -- only these datasets (NULL: every dataset)
-- rule: in_datasets
$datasets IS NULL OR list_contains($datasets, dataset)
-- rule: known_sex
sex IN ('F', 'M')
-- rule: known_age
age_years IS NOT NULL
-- rule: frontal
n_frontal > 0
-- rule: balanced  -- the first per_stratum eligible patients of each stratum, in hash order
count(*) FILTER (WHERE ($datasets IS NULL OR list_contains($datasets, dataset)) AND sex IN ('F', 'M')
                   AND age_years IS NOT NULL AND n_frontal > 0)
  OVER (PARTITION BY sex, age_bucket ORDER BY md5($seed::VARCHAR || ':' || dataset || ':' || patient_id)
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) <= $per_stratum
