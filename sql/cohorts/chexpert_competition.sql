-- name: chexpert_competition
-- description: CheXpert's five competition findings (atelectasis, cardiomegaly, consolidation, edema,
--   pleural effusion) on frontal CheXpert images, uncertain labels read as positive (U-Ones, the policy
--   Irvin et al. found best for atelectasis and edema). CheXpert's own labeler only: CheXpert Plus is not
--   read, so every value is CheXpert's train.csv value.
-- unit: image
-- datasets: chexpert
-- findings: atelectasis, cardiomegaly, consolidation, edema, pleural_effusion
-- uncertain: ones
-- param: min_age DOUBLE = NULL  -- youngest age in years to keep (NULL keeps every age, unknown included)
-- rule: frontal
is_frontal
-- rule: competition_label  -- at least one of the five findings is mentioned
list_has_any(map_keys(labels), ['atelectasis', 'cardiomegaly', 'consolidation', 'edema', 'pleural_effusion'])
-- rule: age
$min_age IS NULL OR age_years >= $min_age
