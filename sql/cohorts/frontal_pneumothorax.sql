-- name: frontal_pneumothorax
-- description: Frontal images positive for pneumothorax, pooled across every dataset that labels it
--   (NIH ChestX-ray14, CheXpert, CheXpert Plus, MIMIC-CXR, PadChest, IU X-ray, QBA). An image shared by
--   linked datasets counts once. The finding is a parameter, so the same file selects any finding.
-- unit: image
-- findings: $finding
-- uncertain: ignore
-- param: finding FINDING = 'pneumothorax'  -- the finding whose positive frontal images are selected
-- rule: labelled  -- some labeler states the finding (positive, negative or uncertain)
labels[$finding] IS NOT NULL
-- rule: frontal  -- PA, AP or AP supine
is_frontal
-- rule: positive  -- the finding's value, after labeler precedence, is 1
labels[$finding] = 1
