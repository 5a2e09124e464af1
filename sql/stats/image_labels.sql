-- name: image_labels
-- description: One row per image and label, with the image's split and view and its patient's sex and age,
--   so a cohort is one filtered scan instead of a three-way join. A label given per study applies to every
--   image of the study. A dataset that links to another (CheXpert Plus to CheXpert, MIMIC-Ext-CXR-QBA to
--   MIMIC-CXR) takes images, studies and patients from its own partition when it has them, else from the
--   linked one; a known sex or age wins over an unknown one. Sorted by finding and value for row-group pruning.
--   A raw label that maps to no finding keeps its row with finding NULL (sorted last): select it by raw_label.
-- parameters: dataset, linked
WITH imgs AS (
    SELECT * FROM images WHERE dataset IN ($dataset, $linked)
    QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY dataset = $dataset DESC) = 1
), stds AS (
    SELECT * FROM studies WHERE dataset IN ($dataset, $linked)
    QUALIFY row_number() OVER (PARTITION BY study_id
                               ORDER BY age_years IS NOT NULL DESC, dataset = $dataset DESC) = 1
), pats AS (
    SELECT * FROM patients WHERE dataset IN ($dataset, $linked)
    QUALIFY row_number() OVER (PARTITION BY patient_id ORDER BY sex <> 'U' DESC, dataset = $dataset DESC) = 1
), labelled AS (
    SELECT i.image_id, i.image_uid, i.study_id, i.patient_id, i.split, i.view_position, i.is_frontal,
           l.finding, l.raw_label, l.value, l.labeler, l.method, l.reader
    FROM labels l JOIN imgs i ON i.image_id = l.image_id
    WHERE l.dataset = $dataset AND l.image_id IS NOT NULL
    UNION ALL
    SELECT i.image_id, i.image_uid, i.study_id, i.patient_id, i.split, i.view_position, i.is_frontal,
           l.finding, l.raw_label, l.value, l.labeler, l.method, l.reader
    FROM labels l JOIN imgs i ON i.study_id = l.study_id
    WHERE l.dataset = $dataset AND l.image_id IS NULL
)
SELECT $dataset AS dataset, x.image_id, x.image_uid, x.study_id, x.patient_id, x.split, x.view_position, x.is_frontal,
       coalesce(p.sex, 'U') AS sex, s.age_years, x.finding, x.raw_label, x.value, x.labeler, x.method, x.reader
FROM labelled x
LEFT JOIN stds s ON s.study_id = x.study_id
LEFT JOIN pats p ON p.patient_id = x.patient_id
ORDER BY x.finding NULLS LAST, x.value, x.is_frontal, x.image_id, x.labeler, x.raw_label, x.method, x.reader
