-- name: longitudinal_followup
-- description: Follow-up studies: a patient's study taken at most `max_days` days after that patient's
--   previous study in the same dataset (studies.days_since_previous, from the source's own dates: MIMIC-CXR,
--   ReXGradient-160K and the others that date their studies), with a frontal image, for models of change
--   between a prior and a current study. One row per follow-up study; its prior is the patient's study
--   with visit_order one less. Datasets without study dates have no follow-ups here.
-- unit: study
-- param: max_days DOUBLE = 30  -- longest gap in days between the previous study and this one
-- rule: follow_up  -- the patient has an earlier dated study in the dataset
days_since_previous IS NOT NULL
-- rule: within_max_days  -- no more than max_days after it
days_since_previous <= $max_days
-- rule: frontal  -- at least one PA, AP or AP supine image
n_frontal > 0
