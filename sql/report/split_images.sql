-- name: split_images
-- description: Per dataset and split: the images of the split, counted as image_labels counts them (a dataset
--   that links to another, such as CheXpert Plus, labels the linked dataset's images). The base of the
--   label prevalence's "images without any label of this labeler". Computed on every row.
-- parameters: datasets
WITH sources AS (
    SELECT dataset, dataset AS source FROM catalog_datasets WHERE list_contains($datasets, dataset)
    UNION
    SELECT dataset, links_to FROM catalog_datasets WHERE links_to IS NOT NULL AND list_contains($datasets, dataset)
)
SELECT s.dataset, i.split, count(DISTINCT i.image_id) AS images
FROM sources s JOIN images i ON i.dataset = s.source
GROUP BY ALL ORDER BY ALL
