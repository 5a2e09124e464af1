-- name: report_sections
-- description: Per dataset, split and report section: the split's reports, how many of them have the
--   section, and the section's length in tokens (mean and quartiles) over the reports that have it. The
--   coverage beside split_stats' mean tokens, and the data of the section-length chart. Computed on every row.
-- parameters: datasets
SELECT dataset, split, section, count(*) AS reports, count(tokens) AS with_section,
       avg(tokens) AS mean_tokens, quantile_cont(tokens, 0.25) AS p25, quantile_cont(tokens, 0.5) AS median,
       quantile_cont(tokens, 0.75) AS p75
FROM (SELECT s.dataset, s.split, r.tokens_indication AS indication, r.tokens_comparison AS comparison,
             r.tokens_findings AS findings, r.tokens_impression AS impression
      FROM reports r JOIN studies s USING (dataset, study_id)
      WHERE list_contains($datasets, r.dataset))
UNPIVOT INCLUDE NULLS (tokens FOR section IN (indication, comparison, findings, impression))
GROUP BY ALL
ORDER BY ALL
