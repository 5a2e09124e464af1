-- Cross-table integrity checks GX cannot express, run with DuckDB over a dataset's staged tables.
-- Each check is a query returning the offending rows: no rows means it passes. Header lines:
--   check:    the check's name (attached to the first table in `requires`)
--   requires: the tables it reads; when the dataset does not feed one of them the check does not apply
--   severity: critical (blocks publishing) or warning
--   description: what a failure means

-- check: image_study_exists
-- requires: images, studies
-- severity: critical
-- description: every image belongs to a study of the same dataset
SELECT i.image_id, i.study_id FROM images i ANTI JOIN studies s USING (study_id);

-- check: image_patient_matches_study
-- requires: images, studies
-- severity: critical
-- description: an image's patient is its study's patient
SELECT i.image_id, i.patient_id, s.patient_id AS study_patient_id
FROM images i JOIN studies s USING (study_id) WHERE i.patient_id IS DISTINCT FROM s.patient_id;

-- check: image_split_matches_study
-- requires: images, studies
-- severity: critical
-- description: an image is in its study's split
SELECT i.image_id, i.split, s.split AS study_split
FROM images i JOIN studies s USING (study_id) WHERE i.split IS DISTINCT FROM s.split;

-- check: study_patient_exists
-- requires: studies, patients
-- severity: critical
-- description: every study belongs to a patient of the same dataset
SELECT s.study_id, s.patient_id FROM studies s ANTI JOIN patients p USING (patient_id);

-- check: patient_in_one_split
-- requires: studies
-- severity: critical
-- description: no patient has studies in two splits (a leak between train and test)
SELECT patient_id, list(DISTINCT split ORDER BY split) AS splits
FROM studies GROUP BY patient_id HAVING count(DISTINCT split) > 1;

-- check: label_study_exists
-- requires: labels, studies
-- severity: critical
-- description: every label belongs to a study of the same dataset
SELECT l.study_id, l.raw_label, l.labeler FROM labels l ANTI JOIN studies s USING (study_id);

-- check: label_image_exists
-- requires: labels, images
-- severity: critical
-- description: every image-level label belongs to an image of the same dataset
SELECT l.image_id, l.raw_label, l.labeler FROM labels l
WHERE l.image_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM images i WHERE i.image_id = l.image_id);

-- check: report_study_exists
-- requires: reports, studies
-- severity: critical
-- description: every report belongs to a study of the same dataset
SELECT r.study_id FROM reports r ANTI JOIN studies s USING (study_id);

-- check: report_patient_matches_study
-- requires: reports, studies
-- severity: critical
-- description: a report's patient is its study's patient
SELECT r.study_id, r.patient_id, s.patient_id AS study_patient_id
FROM reports r JOIN studies s USING (study_id) WHERE r.patient_id IS DISTINCT FROM s.patient_id;

-- check: box_image_exists
-- requires: boxes, images
-- severity: critical
-- description: every box is drawn on an image of the same dataset
SELECT b.image_id, b.raw_label FROM boxes b ANTI JOIN images i USING (image_id);

-- check: question_study_exists
-- requires: qa_questions, studies
-- severity: critical
-- description: every question is asked about a study of the same dataset
SELECT q.study_id, q.question_id FROM qa_questions q ANTI JOIN studies s USING (study_id);

-- check: question_patient_matches_study
-- requires: qa_questions, studies
-- severity: critical
-- description: a question's patient is its study's patient
SELECT q.study_id, q.question_id, q.patient_id, s.patient_id AS study_patient_id
FROM qa_questions q JOIN studies s USING (study_id) WHERE q.patient_id IS DISTINCT FROM s.patient_id;

-- check: answer_question_exists
-- requires: qa_answers, qa_questions
-- severity: critical
-- description: every sub-answer belongs to a question
SELECT a.study_id, a.question_id, a.answer_id FROM qa_answers a ANTI JOIN qa_questions q USING (study_id, question_id);

-- check: answer_parent_exists
-- requires: qa_answers
-- severity: critical
-- description: every nested sub-answer's parent exists in the same question
SELECT a.study_id, a.question_id, a.answer_id, a.parent_answer_id FROM qa_answers a
WHERE a.parent_answer_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM qa_answers p
    WHERE p.study_id = a.study_id AND p.question_id = a.question_id AND p.answer_id = a.parent_answer_id);

-- check: answer_box_answer_exists
-- requires: qa_answer_boxes, qa_answers
-- severity: critical
-- description: every answer box belongs to a sub-answer
SELECT b.study_id, b.question_id, b.answer_id, b.image_id FROM qa_answer_boxes b
ANTI JOIN qa_answers a USING (study_id, question_id, answer_id);

-- check: quarantine_share
-- requires: quarantine, images
-- severity: warning
-- description: under 1% of a dataset's image rows were rejected as unreadable
SELECT (SELECT count(DISTINCT (source_file, line_number, row_number)) FROM quarantine) AS rejected_rows,
       (SELECT count(*) FROM images) AS image_rows
WHERE (SELECT count(DISTINCT (source_file, line_number, row_number)) FROM quarantine)
      > 0.01 * greatest((SELECT count(*) FROM images), 1);
