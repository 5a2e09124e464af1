-- name: qba_fine_tuning
-- description: MIMIC-CXR training studies with at least one MIMIC-Ext-CXR-QBA fine-tuning question
--   (grade A or better) and a frontal image. One row per study, listing its images; QBA shares MIMIC-CXR's
--   ids, so each study appears once, as MIMIC-CXR's, with mimic_qba in also_in.
-- unit: study
-- datasets: mimic_cxr, mimic_qba
-- param: split SPLIT = 'train'  -- the official split to take
-- rule: in_split
split = $split
-- rule: frontal  -- at least one PA, AP or AP supine image
n_frontal > 0
-- rule: fine_tuning  -- a QBA question of the study is in the fine-tuning set
EXISTS (SELECT 1 FROM qa_questions q WHERE q.study_id = u.study_id AND q.fine_tuning)
