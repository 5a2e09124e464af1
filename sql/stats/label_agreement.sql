-- name: label_agreement
-- description: Agreement between labelers that label the same images or studies, per finding, computed on
--   every label row of the dataset (and of the dataset it links to: CheXpert Plus's CheXbert labels against
--   CheXpert's, MIMIC-Ext-CXR-QBA's scene-graph labels against MIMIC-CXR's).
--   Label sets: one per labeler; a labeler that states one raw label on one subject once per method
--   (labels.method: CheXbert's report sections) is one set per method, while a method that only qualifies
--   a reading (QBA's probability word, PadChest's Physician / RNN_model) does not split the labeler.
--   Labels with a reader (VinDr-CXR R1...R17) form a multi-reader set instead. Pairs (statistic 'cohen'):
--   every two sets of different labelers, both of this dataset or one of it and one of the linked dataset,
--   labeler_a from this dataset and first by name. Unit: the image when both sets label images, else the
--   study (image labels rolled up to their study). A unit is compared when both sets have a label row on it
--   (any finding); a set's missing row for a finding on a unit it labeled counts as negative, as NIH lists
--   only positives and CheXpert-style labelers leave unmentioned findings blank.
--   Findings: a finding is compared when one set names it and the other names it or findings below it in
--   the hierarchy (finding_hierarchy); a set that does not name the finding itself is read through the
--   findings below it (NIH's nodule and mass for Google's lung_lesion). Several rows of a set on one unit
--   and finding: positive if any is 1, else uncertain if any is -1, else negative. Uncertain (-1): a unit
--   uncertain by either set is left out of the comparison and counted in n_excluded_uncertain; a finding
--   with no unit left to compare has no row.
--   Raw labels that map to no finding are not compared.
--   Statistics over the 2x2 table (tp both positive, fp a only, fn b only, tn neither): Cohen's kappa with
--   the Fleiss-Cohen-Everitt (1969) large-sample standard error; Matthews' correlation with a Fisher
--   z-transform interval, tanh(atanh(mcc) +- 1.96/sqrt(n-3)); F1 = 2tp/(2tp+fp+fn) with the delta-method
--   standard error sqrt(4 tp (fp+fn)(tp+fp+fn))/(2tp+fp+fn)^2. 95 % intervals (Wald, estimate +- 1.96 SE,
--   for kappa and F1), clipped to the statistic's range.
--   Multi-reader sets (statistic 'fleiss'): per unit and finding, m readers with a label row on the unit and
--   x of them positive (uncertain reads dropped, counted in n_excluded_uncertain); units with m >= 2. Fleiss'
--   kappa for a binary rating with m varying by unit (Fleiss, Levin & Paik 2003, ch. 18):
--   1 - sum(x(m-x)/m) / ((sum(m) - n) p (1-p)), p = sum(x)/sum(m); its 95 % interval from the jackknife
--   over units (leave one unit out, closed form from the sums).
--   An estimate is NULL where it is undefined (kappa: chance agreement 1; mcc: an empty margin; f1: no
--   positive at all); its bounds are NULL when n < 4 or the standard error is 0 or undefined: no
--   disagreement, a labeler with one value only (kappa is then 0 by construction), tp = 0 for f1, a
--   leave-one-out kappa undefined for fleiss.
-- parameters: dataset, linked
WITH own_and_linked AS (
    SELECT dataset AS src, labeler, method, reader, study_id, image_id, raw_label, finding, value
    FROM labels WHERE dataset IN ($dataset, $linked)
), split_by_method AS (   -- labelers that state one raw label on one subject once per method (CheXbert)
    SELECT DISTINCT src, labeler FROM own_and_linked
    GROUP BY src, labeler, reader, study_id, image_id, raw_label HAVING count(DISTINCT method) > 1
), lab AS (
    SELECT l.src, l.labeler, CASE WHEN m.labeler IS NULL THEN '' ELSE coalesce(l.method, '') END AS method,
           l.reader, l.study_id, l.image_id, l.finding, l.value
    FROM own_and_linked l LEFT JOIN split_by_method m ON m.src = l.src AND m.labeler = l.labeler
), sets AS (
    SELECT src, labeler, method, bool_and(image_id IS NOT NULL) AS per_image
    FROM lab WHERE reader IS NULL GROUP BY ALL
), pairs AS (
    SELECT row_number() OVER (ORDER BY a.labeler, a.method, b.src, b.labeler, b.method) AS pair_id,
           a.labeler AS labeler_a, a.method AS method_a, b.src AS dataset_b, b.labeler AS labeler_b,
           b.method AS method_b, CASE WHEN a.per_image AND b.per_image THEN 'image' ELSE 'study' END AS unit
    FROM sets a JOIN sets b ON a.labeler <> b.labeler
    WHERE a.src = $dataset AND (b.src <> $dataset OR a.labeler < b.labeler)
), sides AS (
    SELECT pair_id, unit, 'a' AS side, $dataset AS src, labeler_a AS labeler, method_a AS method FROM pairs
    UNION ALL
    SELECT pair_id, unit, 'b' AS side, dataset_b AS src, labeler_b AS labeler, method_b AS method FROM pairs
), side_rows AS (
    SELECT s.pair_id, s.side, CASE WHEN s.unit = 'image' THEN l.image_id ELSE l.study_id END AS unit_id,
           l.finding, l.value
    FROM sides s JOIN lab l ON l.src = s.src AND l.labeler = s.labeler AND l.method = s.method
    WHERE l.reader IS NULL
), shared AS (
    SELECT DISTINCT pair_id, unit_id FROM side_rows WHERE side = 'a'
    INTERSECT
    SELECT DISTINCT pair_id, unit_id FROM side_rows WHERE side = 'b'
), direct AS (
    SELECT DISTINCT pair_id, side, finding FROM side_rows WHERE finding IS NOT NULL
), covered AS (
    SELECT DISTINCT d.pair_id, d.side, h.ancestor AS finding
    FROM direct d JOIN finding_hierarchy h ON h.descendant = d.finding
), pair_findings AS (
    (SELECT pair_id, finding FROM covered WHERE side = 'a'
     INTERSECT SELECT pair_id, finding FROM covered WHERE side = 'b')
    INTERSECT SELECT pair_id, finding FROM direct
), side_values AS (   -- a set's own rows on a finding it names, else its rows on the findings below it
    SELECT r.pair_id, r.side, r.unit_id, h.ancestor AS finding,
           CASE WHEN bool_or(r.value = 1) THEN 1 WHEN bool_or(r.value = -1) THEN -1 ELSE 0 END AS value
    FROM side_rows r
    JOIN finding_hierarchy h ON h.descendant = r.finding
    JOIN pair_findings f ON f.pair_id = r.pair_id AND f.finding = h.ancestor
    LEFT JOIN direct d ON d.pair_id = r.pair_id AND d.side = r.side AND d.finding = h.ancestor
    WHERE h.depth = 0 OR d.finding IS NULL
    GROUP BY ALL
), compared AS (
    SELECT u.pair_id, f.finding, coalesce(va.value, 0) AS a, coalesce(vb.value, 0) AS b
    FROM shared u JOIN pair_findings f ON f.pair_id = u.pair_id
    LEFT JOIN side_values va ON va.pair_id = u.pair_id AND va.side = 'a' AND va.unit_id = u.unit_id
                            AND va.finding = f.finding
    LEFT JOIN side_values vb ON vb.pair_id = u.pair_id AND vb.side = 'b' AND vb.unit_id = u.unit_id
                            AND vb.finding = f.finding
), cohen_counts AS (
    SELECT p.unit, p.labeler_a, p.method_a, p.labeler_b, p.method_b, p.dataset_b, c.finding,
           count(*) FILTER (WHERE a = 1 AND b = 1) AS tp, count(*) FILTER (WHERE a = 1 AND b = 0) AS fp,
           count(*) FILTER (WHERE a = 0 AND b = 1) AS fn, count(*) FILTER (WHERE a = 0 AND b = 0) AS tn,
           count(*) FILTER (WHERE a = -1 OR b = -1) AS n_excluded_uncertain
    FROM compared c JOIN pairs p USING (pair_id)
    GROUP BY ALL
), cohen_p AS (
    SELECT *, tp + fp + fn + tn AS n,
           tp / (tp + fp + fn + tn) AS p11, fp / (tp + fp + fn + tn) AS p10,
           fn / (tp + fp + fn + tn) AS p01, tn / (tp + fp + fn + tn) AS p00
    FROM cohen_counts WHERE tp + fp + fn + tn > 0
), cohen_e AS (
    SELECT *, p11 + p10 AS pa, p11 + p01 AS pb, p11 + p00 AS po,
           (p11 + p10) * (p11 + p01) + (p01 + p00) * (p10 + p00) AS pe
    FROM cohen_p
), cohen AS (
    SELECT *,
           CASE WHEN pe < 1 THEN (po - pe) / (1 - pe) END AS kappa,
           CASE WHEN pe < 1 THEN
               (p11 * ((1 - pe) - (pa + pb) * (1 - po)) ^ 2 + p00 * ((1 - pe) - ((1 - pa) + (1 - pb)) * (1 - po)) ^ 2
                + (1 - po) ^ 2 * (p10 * (pb + (1 - pa)) ^ 2 + p01 * ((1 - pb) + pa) ^ 2)
                - (po * pe - 2 * pe + po) ^ 2) / (n * (1 - pe) ^ 4) END AS kappa_var,
           CASE WHEN tp + fp > 0 AND fn + tn > 0 AND tp + fn > 0 AND fp + tn > 0 THEN
               (tp::DOUBLE * tn - fp::DOUBLE * fn)
               / sqrt((tp + fp)::DOUBLE * (fn + tn) * (tp + fn) * (fp + tn)) END AS mcc,
           CASE WHEN 2 * tp + fp + fn > 0 THEN 2 * tp / (2 * tp + fp + fn) END AS f1,
           CASE WHEN 2 * tp + fp + fn > 0 THEN
               sqrt(4.0 * tp * (fp + fn) * (tp + fp + fn)) / (2 * tp + fp + fn) ^ 2 END AS f1_se
    FROM cohen_e
), cohen_rows AS (
    SELECT unit, labeler_a, method_a, labeler_b, method_b, dataset_b, finding, 'cohen' AS statistic, n,
           NULL AS n_readers, tp, fp, fn, tn, pa AS prevalence_a, pb AS prevalence_b, kappa,
           CASE WHEN n >= 4 AND mcc IS NOT NULL AND fp + fn > 0 AND kappa_var > 0
                THEN greatest(-1, kappa - 1.959963984540054 * sqrt(kappa_var)) END AS kappa_low,
           CASE WHEN n >= 4 AND mcc IS NOT NULL AND fp + fn > 0 AND kappa_var > 0
                THEN least(1, kappa + 1.959963984540054 * sqrt(kappa_var)) END AS kappa_high,
           mcc,
           CASE WHEN n >= 4 AND abs(mcc) < 1 THEN tanh(atanh(mcc) - 1.959963984540054 / sqrt(n - 3)) END AS mcc_low,
           CASE WHEN n >= 4 AND abs(mcc) < 1 THEN tanh(atanh(mcc) + 1.959963984540054 / sqrt(n - 3)) END AS mcc_high,
           f1,
           CASE WHEN n >= 4 AND f1_se > 0 THEN greatest(0, f1 - 1.959963984540054 * f1_se) END AS f1_low,
           CASE WHEN n >= 4 AND f1_se > 0 THEN least(1, f1 + 1.959963984540054 * f1_se) END AS f1_high,
           n_excluded_uncertain
    FROM cohen
), reader_sets AS (
    SELECT labeler, method, CASE WHEN bool_and(image_id IS NOT NULL) THEN 'image' ELSE 'study' END AS unit
    FROM lab WHERE src = $dataset AND reader IS NOT NULL GROUP BY ALL
), reads AS (
    SELECT s.labeler, s.method, s.unit, CASE WHEN s.unit = 'image' THEN l.image_id ELSE l.study_id END AS unit_id,
           l.reader, l.finding, l.value
    FROM reader_sets s JOIN lab l ON l.labeler = s.labeler AND l.method = s.method
    WHERE l.src = $dataset AND l.reader IS NOT NULL
), unit_readers AS (
    SELECT DISTINCT labeler, method, unit, unit_id, reader FROM reads
), read_findings AS (
    SELECT DISTINCT labeler, method, finding FROM reads WHERE finding IS NOT NULL
), read_values AS (
    SELECT labeler, method, unit_id, reader, finding,
           CASE WHEN bool_or(value = 1) THEN 1 WHEN bool_or(value = -1) THEN -1 ELSE 0 END AS value
    FROM reads WHERE finding IS NOT NULL GROUP BY ALL
), unit_counts AS (   -- per unit and finding: m certain reads, x of them positive, u uncertain
    SELECT r.labeler, r.method, r.unit, f.finding, r.unit_id,
           count(*) FILTER (WHERE coalesce(v.value, 0) <> -1) AS m, count(*) FILTER (WHERE v.value = 1) AS x,
           count(*) FILTER (WHERE v.value = -1) AS u
    FROM unit_readers r JOIN read_findings f ON f.labeler = r.labeler AND f.method = r.method
    LEFT JOIN read_values v ON v.labeler = r.labeler AND v.method = r.method AND v.unit_id = r.unit_id
                           AND v.reader = r.reader AND v.finding = f.finding
    GROUP BY ALL
), fleiss_groups AS (   -- units alike in (m, x) have the same leave-one-out kappa
    SELECT labeler, method, unit, finding, m, x, count(*) AS k FROM unit_counts WHERE m >= 2 GROUP BY ALL
), fleiss_sums AS (
    SELECT labeler, method, unit, finding, sum(k) AS n, sum(k * m) AS reads, sum(k * x) AS pos,
           sum(k * x * (m - x) / m) AS dis, max(m) AS n_readers
    FROM fleiss_groups GROUP BY ALL
), fleiss_kappa AS (
    SELECT *, pos / reads AS p,
           CASE WHEN reads > n AND pos > 0 AND pos < reads
                THEN 1 - dis / ((reads - n) * (pos / reads) * (1 - pos / reads)) END AS kappa
    FROM fleiss_sums
), leave_one_out AS (
    SELECT g.labeler, g.method, g.unit, g.finding, g.k, s.n,
           CASE WHEN s.reads - g.m > s.n - 1 AND s.pos - g.x > 0 AND s.pos - g.x < s.reads - g.m
                THEN 1 - (s.dis - g.x * (g.m - g.x) / g.m)
                         / ((s.reads - g.m - (s.n - 1)) * ((s.pos - g.x) / (s.reads - g.m))
                            * (1 - (s.pos - g.x) / (s.reads - g.m))) END AS kappa_i
    FROM fleiss_groups g JOIN fleiss_sums s USING (labeler, method, unit, finding)
), jackknife AS (
    SELECT labeler, method, unit, finding, bool_and(kappa_i IS NOT NULL) AS defined,
           sum(k * kappa_i) / any_value(n) AS mean_i
    FROM leave_one_out GROUP BY ALL
), jackknife_var AS (
    SELECT o.labeler, o.method, o.unit, o.finding,
           (any_value(o.n) - 1) / any_value(o.n) * sum(o.k * (o.kappa_i - j.mean_i) ^ 2) AS kappa_var
    FROM leave_one_out o JOIN jackknife j USING (labeler, method, unit, finding)
    WHERE j.defined GROUP BY ALL
), uncertain_reads AS (
    SELECT labeler, method, unit, finding, sum(u) AS n_excluded_uncertain FROM unit_counts GROUP BY ALL
), fleiss_rows AS (
    SELECT f.unit, f.labeler AS labeler_a, f.method AS method_a, NULL AS labeler_b, NULL AS method_b,
           NULL AS dataset_b, f.finding, 'fleiss' AS statistic, f.n, f.n_readers,
           NULL AS tp, NULL AS fp, NULL AS fn, NULL AS tn, f.p AS prevalence_a, NULL AS prevalence_b, f.kappa,
           CASE WHEN f.n >= 4 AND v.kappa_var > 0 THEN greatest(-1, f.kappa - 1.959963984540054 * sqrt(v.kappa_var)) END
               AS kappa_low,
           CASE WHEN f.n >= 4 AND v.kappa_var > 0 THEN least(1, f.kappa + 1.959963984540054 * sqrt(v.kappa_var)) END
               AS kappa_high,
           NULL AS mcc, NULL AS mcc_low, NULL AS mcc_high, NULL AS f1, NULL AS f1_low, NULL AS f1_high,
           u.n_excluded_uncertain
    FROM fleiss_kappa f
    LEFT JOIN jackknife_var v USING (labeler, method, unit, finding)
    LEFT JOIN uncertain_reads u USING (labeler, method, unit, finding)
)
SELECT $dataset AS dataset, unit, labeler_a, nullif(method_a, '') AS method_a, labeler_b,
       nullif(method_b, '') AS method_b, dataset_b, finding, statistic, n, n_readers, tp, fp, fn, tn,
       prevalence_a, prevalence_b, kappa, kappa_low, kappa_high, mcc, mcc_low, mcc_high, f1, f1_low, f1_high,
       n_excluded_uncertain
FROM (SELECT * FROM cohen_rows UNION ALL BY NAME SELECT * FROM fleiss_rows)
ORDER BY finding, statistic, labeler_a, method_a, dataset_b, labeler_b, method_b
