-- name: report_generation
-- description: Studies for radiology report generation: a report whose findings and impression sections
--   both say something, and at least one frontal image, across MIMIC-CXR, ReXGradient-160K, IU X-ray and
--   CheXpert Plus (whose reports describe CheXpert's studies: such a study is CheXpert's, with
--   chexpert_plus in also_in). One row per study, listing its images; pass --finding to add labels.
--   A section that is only whitespace counts as empty.
-- unit: study
-- datasets: mimic_cxr, rexgradient, iu_xray, chexpert, chexpert_plus
-- rule: reported  -- the study has a report in its dataset or a dataset linked to it
EXISTS (SELECT 1 FROM reports r JOIN catalog_datasets d ON d.dataset = r.dataset
        WHERE r.study_id = u.study_id AND coalesce(d.links_to, d.dataset) = u.dataset)
-- rule: findings  -- the report's findings section is not empty
EXISTS (SELECT 1 FROM reports r JOIN catalog_datasets d ON d.dataset = r.dataset
        WHERE r.study_id = u.study_id AND coalesce(d.links_to, d.dataset) = u.dataset
          AND trim(r.findings) <> '')
-- rule: impression  -- the report's impression section is not empty
EXISTS (SELECT 1 FROM reports r JOIN catalog_datasets d ON d.dataset = r.dataset
        WHERE r.study_id = u.study_id AND coalesce(d.links_to, d.dataset) = u.dataset
          AND trim(r.impression) <> '')
-- rule: frontal  -- at least one PA, AP or AP supine image
n_frontal > 0
