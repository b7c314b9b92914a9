-- ForValue catalog queries. forvalue.catalog.db loads this file and splits it at "-- name: <query>"
-- lines; parameters are DuckDB named parameters ($name), bound by the driver, never formatted in.
-- Tables named new_* are Arrow tables the catalog registers for the length of one statement.

-- name: upsert_dataset
-- Registering content already registered makes it the name's current version again (registered_at);
-- dagster_run_id stays the run that first registered it (the lineage of what was cut from it).
INSERT INTO datasets (name, version, source_path, format, n_rows, n_samples, n_skipped,
                      column_mapping, registered_at, code_version, dagster_run_id)
VALUES ($name, $version, $source_path, $format, $n_rows, $n_samples, $n_skipped,
        $column_mapping, $registered_at, $code_version, $dagster_run_id)
ON CONFLICT (name, version) DO UPDATE SET
    source_path = excluded.source_path, format = excluded.format, n_rows = excluded.n_rows,
    n_samples = excluded.n_samples, n_skipped = excluded.n_skipped,
    column_mapping = excluded.column_mapping, registered_at = excluded.registered_at,
    code_version = excluded.code_version;

-- name: upsert_valuation_set
INSERT INTO valuation_sets (name, version, source_path, format, n_rows, n_samples, n_skipped,
                            column_mapping, registered_at, code_version, dagster_run_id)
VALUES ($name, $version, $source_path, $format, $n_rows, $n_samples, $n_skipped,
        $column_mapping, $registered_at, $code_version, $dagster_run_id)
ON CONFLICT (name, version) DO UPDATE SET
    source_path = excluded.source_path, format = excluded.format, n_rows = excluded.n_rows,
    n_samples = excluded.n_samples, n_skipped = excluded.n_skipped,
    column_mapping = excluded.column_mapping, registered_at = excluded.registered_at,
    code_version = excluded.code_version;

-- name: current_dataset
SELECT * FROM current_datasets WHERE name = $name;

-- name: current_valuation_set
SELECT * FROM current_valuation_sets WHERE name = $name;

-- name: delete_set_samples
DELETE FROM samples WHERE set_kind = $set_kind AND set_name = $set_name AND set_version = $set_version;

-- name: insert_samples
INSERT INTO samples (set_kind, set_name, set_version, sample_id, row_number, user_id, kind,
                     prompt, response, text, messages, images, label, record)
SELECT set_kind, set_name, set_version, sample_id, row_number, user_id, kind,
       prompt, response, text, messages, images, label, record
FROM new_samples;

-- name: set_samples
SELECT * FROM samples
WHERE set_kind = $set_kind AND set_name = $set_name AND set_version = $set_version
ORDER BY row_number, sample_id;

-- name: upsert_model
INSERT INTO models (model_id, name, weights_hash, dtype, kind, spec, first_seen)
VALUES ($model_id, $name, $weights_hash, $dtype, $kind, $spec, $first_seen)
ON CONFLICT (model_id) DO NOTHING;

-- name: get_model
SELECT * FROM models WHERE model_id = $model_id;

-- name: insert_feature_run
INSERT INTO feature_runs (feature_run_id, set_kind, set_name, set_version, model_id,
                          feature_config_id, feature_config, n_samples, n_computed, n_reused,
                          n_shards_written, store_folder, seconds, code_version, dagster_run_id,
                          created_at)
VALUES ($feature_run_id, $set_kind, $set_name, $set_version, $model_id, $feature_config_id,
        $feature_config, $n_samples, $n_computed, $n_reused, $n_shards_written, $store_folder,
        $seconds, $code_version, $dagster_run_id, $created_at);

-- name: latest_feature_run
-- The newest feature run of one set version under one feature configuration, whatever model: the
-- scoring step refuses a training and a valuation run from different models.
SELECT * FROM feature_runs
WHERE set_kind = $set_kind AND set_name = $set_name AND set_version = $set_version
  AND feature_config_id = $feature_config_id
ORDER BY created_at DESC, feature_run_id
LIMIT 1;

-- name: feature_run_totals
SELECT set_kind, count(*) AS runs, sum(n_computed) AS computed, sum(n_reused) AS reused
FROM feature_runs
GROUP BY set_kind
ORDER BY set_kind;

-- name: delete_scores
DELETE FROM scores
WHERE dataset_name = $dataset_name AND valuation_set = $valuation_set
  AND feature_config_id = $feature_config_id AND model_id = $model_id;

-- name: insert_scores
INSERT INTO scores (dataset_name, valuation_set, feature_config_id, model_id, sample_id, score,
                    rank, normalized, norm, dataset_version, valuation_version, score_run_id,
                    code_version, dagster_run_id)
SELECT $dataset_name, $valuation_set, $feature_config_id, $model_id, sample_id, score, rank,
       normalized, norm, $dataset_version, $valuation_version, $score_run_id, $code_version,
       $dagster_run_id
FROM new_scores;

-- name: insert_score_run
INSERT INTO score_runs (score_run_id, dataset_name, dataset_version, valuation_set,
                        valuation_version, model_id, feature_config_id, train_feature_run_id,
                        val_feature_run_id, method, valuation_holdout, n_valuation, n_scores,
                        score_mean, score_std, seconds, code_version, dagster_run_id, created_at)
VALUES ($score_run_id, $dataset_name, $dataset_version, $valuation_set, $valuation_version,
        $model_id, $feature_config_id, $train_feature_run_id, $val_feature_run_id, $method,
        $valuation_holdout, $n_valuation, $n_scores, $score_mean, $score_std, $seconds, $code_version,
        $dagster_run_id, $created_at);

-- name: latest_score_run
-- The newest score run of a pair under one feature configuration, whatever model or set versions
-- (what the curation step cuts from: the scoring it follows ran last). Callers check the versions;
-- governance queries use the latest_score_runs view, keyed by everything that makes scores differ.
SELECT * FROM score_runs
WHERE dataset_name = $dataset_name AND valuation_set = $valuation_set
  AND feature_config_id = $feature_config_id
ORDER BY created_at DESC, score_run_id
LIMIT 1;

-- name: get_scores
SELECT sample_id, score, rank, normalized, norm, dataset_version, valuation_version, score_run_id,
       dagster_run_id
FROM scores
WHERE dataset_name = $dataset_name AND valuation_set = $valuation_set
  AND feature_config_id = $feature_config_id AND model_id = $model_id
ORDER BY rank;

-- name: score_problems
-- Problems with the stored scores of one (dataset, valuation set, config, model): training samples
-- of the current dataset version without a score, scores of samples not in it, non-finite values,
-- and a version mismatch between the scores and the current dataset.
WITH cur AS (
    SELECT sample_id FROM samples
    WHERE set_kind = 'dataset' AND set_name = $dataset_name AND set_version = $dataset_version
), sc AS (
    SELECT * FROM scores
    WHERE dataset_name = $dataset_name AND valuation_set = $valuation_set
      AND feature_config_id = $feature_config_id AND model_id = $model_id
)
SELECT
    (SELECT count(*) FROM cur)                                                AS n_samples,
    (SELECT count(*) FROM sc)                                                 AS n_scores,
    (SELECT count(*) FROM cur WHERE sample_id NOT IN (SELECT sample_id FROM sc)) AS n_missing,
    (SELECT count(*) FROM sc WHERE sample_id NOT IN (SELECT sample_id FROM cur)) AS n_extra,
    (SELECT count(*) FROM sc WHERE NOT isfinite(score))                       AS n_non_finite,
    (SELECT count(*) FROM sc WHERE dataset_version <> $dataset_version)        AS n_stale;

-- name: insert_subset
INSERT INTO subsets (subset_id, dataset_name, dataset_version, valuation_set, valuation_version,
                     model_id, feature_config_id, score_run_id, mode, value, strategy, n_total,
                     n_selected, jsonl_path, parquet_path, code_version, dagster_run_id, created_at, checks)
VALUES ($subset_id, $dataset_name, $dataset_version, $valuation_set, $valuation_version,
        $model_id, $feature_config_id, $score_run_id, $mode, $value, $strategy, $n_total,
        $n_selected, $jsonl_path, $parquet_path, $code_version, $dagster_run_id, $created_at, $checks);

-- name: insert_subset_samples
INSERT INTO subset_samples (subset_id, sample_id, rank, score, ranked_by)
SELECT $subset_id, sample_id, rank, score, ranked_by FROM new_subset_samples;

-- name: insert_subset_near_cut
INSERT INTO subset_near_cut (subset_id, sample_id, rank, score, ranked_by)
SELECT $subset_id, sample_id, rank, score, ranked_by FROM new_subset_near_cut;

-- name: insert_subset_checks
INSERT INTO subset_checks (subset_id, sample_id, check_name, check_value, threshold)
SELECT $subset_id, sample_id, check_name, check_value, threshold FROM new_subset_checks;

-- name: subset_checks
-- The samples a subset's consistency checks dropped, least failing first.
SELECT sample_id, check_name, check_value, threshold FROM subset_checks WHERE subset_id = $subset_id
ORDER BY check_value / greatest(abs(threshold), 1e-12), sample_id;

-- name: latest_subset
-- The pair's most recent subset, whatever version or model it came from (what fine-tuning takes).
SELECT * FROM subsets WHERE dataset_name = $dataset_name AND valuation_set = $valuation_set
ORDER BY created_at DESC, subset_id
LIMIT 1;

-- name: subset_sample_count
SELECT count(*) AS n FROM subset_samples WHERE subset_id = $subset_id;

-- name: subset_members_content
-- A subset's members in its order, with the content of each sample (the dataset version it was
-- curated from).
SELECT m.rank, m.sample_id, m.score, s.row_number, s.user_id, s.prompt, s.response, s.text, s.messages, s.label
FROM subset_samples m
JOIN subsets u ON u.subset_id = m.subset_id
LEFT JOIN samples s ON s.set_kind = 'dataset' AND s.set_name = u.dataset_name
                   AND s.set_version = u.dataset_version AND s.sample_id = m.sample_id
WHERE m.subset_id = $subset_id
ORDER BY m.rank;

-- name: subset_lineage
SELECT * FROM subset_lineage WHERE subset_id = $subset_id;

-- name: dataset_version
SELECT * FROM datasets WHERE name = $name AND version = $version;

-- name: valuation_set_version
SELECT * FROM valuation_sets WHERE name = $name AND version = $version;

-- name: set_samples_by_ids
SELECT * FROM samples
WHERE set_kind = $set_kind AND set_name = $set_name AND set_version = $set_version
  AND list_contains($sample_ids, sample_id)
ORDER BY row_number, sample_id;

-- name: set_memory_limit
-- The memory DuckDB may use before it spills to disk (the catalog's temp folder).
SET memory_limit = $memory_limit;

-- Streamed registration: each batch of a file goes into a temporary staging table; duplicate ids
-- and content are resolved by DuckDB (out of core when needed), then the samples are copied over.
-- name: create_staging_samples
CREATE OR REPLACE TEMP TABLE staging_samples AS SELECT * FROM samples WHERE false;

-- name: insert_staging_samples
INSERT INTO staging_samples
SELECT set_kind, set_name, set_version, sample_id, row_number, user_id, kind,
       prompt, response, text, messages, images, label, record
FROM new_samples;

-- name: staging_duplicate_user_id
-- The first row whose id column repeats an earlier row's id.
SELECT user_id, min(row_number) AS first_row, list(row_number ORDER BY row_number)[2] AS row_number
FROM staging_samples
WHERE user_id IS NOT NULL
GROUP BY user_id
HAVING count(*) > 1
ORDER BY row_number
LIMIT 1;

-- name: staging_counts
SELECT count(*) AS n_rows, count(DISTINCT sample_id) AS n_samples FROM staging_samples;

-- name: insert_samples_from_staging
-- One row per distinct content id, at its first row in the file.
INSERT INTO samples
SELECT DISTINCT ON (sample_id) *
FROM staging_samples
ORDER BY sample_id, row_number;

-- name: drop_staging_samples
DROP TABLE IF EXISTS staging_samples;

-- name: kept_missing
-- Members of a subset being written (the registered Arrow table kept_members: position, sample_id,
-- rank, score) that the set version does not hold.
SELECT k.sample_id FROM kept_members k
WHERE k.sample_id NOT IN (SELECT sample_id FROM samples
                          WHERE set_kind = $set_kind AND set_name = $set_name AND set_version = $set_version)
LIMIT 1;

-- name: kept_samples_ranked
-- The members of a subset being written with their stored samples, in the subset's order.
SELECT k.sample_id, k.rank, k.score, s.row_number AS "row", s.prompt, s.response, s.text, s.messages, s.record
FROM kept_members k JOIN samples s ON s.sample_id = k.sample_id
WHERE s.set_kind = $set_kind AND s.set_name = $set_name AND s.set_version = $set_version
ORDER BY k.position;

-- name: kept_records_in_file_order
-- The raw rows of a subset being written, in the order of the source file.
SELECT s.record FROM samples s JOIN kept_members k ON s.sample_id = k.sample_id
WHERE s.set_kind = $set_kind AND s.set_name = $set_name AND s.set_version = $set_version
ORDER BY s.row_number, s.sample_id;

-- Curation reports (forvalue.report): one subset, what it was cut from, and what changed since the last one.
-- name: get_subset
SELECT * FROM subsets WHERE subset_id = $subset_id;

-- name: subsets_with_prefix
-- Subsets whose id starts with $prefix (the short ids reports and tables print), newest first.
SELECT subset_id, created_at FROM subsets WHERE starts_with(subset_id, $prefix)
ORDER BY created_at DESC, subset_id
LIMIT 5;

-- name: report_scored
-- Every sample a subset was cut from: the scores of its score run (while they are stored: scoring the pair
-- again replaces them) and its members, with the member's rank (NULL: dropped) and the check that dropped
-- the sample (NULL: none). kept: a member; scored: its score run's score is still stored.
WITH sc AS (SELECT sample_id, score, normalized FROM scores WHERE score_run_id = $score_run_id),
     m AS (SELECT sample_id, rank, score FROM subset_samples WHERE subset_id = $subset_id)
SELECT coalesce(m.sample_id, sc.sample_id) AS sample_id, coalesce(sc.score, m.score) AS score, sc.normalized,
       m.rank, m.sample_id IS NOT NULL AS kept, sc.sample_id IS NOT NULL AS scored,
       c.check_name, c.check_value, c.threshold
FROM sc FULL OUTER JOIN m ON m.sample_id = sc.sample_id
LEFT JOIN subset_checks c ON c.subset_id = $subset_id AND c.sample_id = coalesce(m.sample_id, sc.sample_id);

-- name: report_samples
-- The stored content of some samples ($sample_ids, a list) of a training dataset version.
SELECT s.sample_id, s.row_number, s.user_id, s.prompt, s.response, s.text, s.messages
FROM samples s JOIN (SELECT unnest($sample_ids) AS sample_id) ids ON ids.sample_id = s.sample_id
WHERE s.set_kind = 'dataset' AND s.set_name = $set_name AND s.set_version = $set_version;

-- name: report_record_keys
-- The candidate categorical fields of a dataset version's raw records, from its first 2000 records: the
-- top-level fields whose values there are strings of at most 80 characters, booleans or integers, at most
-- $max_values distinct ones (an id, a text or a number is out at once).
SELECT j.key FROM (SELECT record FROM samples
                   WHERE set_kind = 'dataset' AND set_name = $set_name AND set_version = $set_version
                   LIMIT 2000) r, json_each(r.record) j
WHERE j.type <> 'NULL'
GROUP BY j.key
HAVING count(DISTINCT j.value) <= $max_values
   AND bool_and(j.type IN ('VARCHAR', 'BOOLEAN', 'BIGINT', 'UBIGINT') AND length(j.value) <= 82)
ORDER BY j.key;

-- name: report_composition
-- Kept and dropped counts of every value of the fields $keys (read at the JSON paths $paths, in the same
-- order) over the samples of the dataset version (only those the score run $score_run_id scored, when
-- $scored_only), for the fields that stay categorical over every record: strings of at most 80 characters,
-- booleans or integers, at most $max_values distinct values. n_held: how many records hold the field.
WITH members AS (SELECT sample_id FROM subset_samples WHERE subset_id = $subset_id),
     rec AS (SELECT s.sample_id, s.record FROM samples s
             WHERE s.set_kind = 'dataset' AND s.set_name = $set_name AND s.set_version = $set_version
               AND (NOT $scored_only
                    OR s.sample_id IN (SELECT sample_id FROM scores WHERE score_run_id = $score_run_id))),
     kv AS (SELECT sample_id, key, json_type(v) AS type, v ->> '$' AS value
            FROM (SELECT r.sample_id, unnest($keys) AS key, unnest(json_extract(r.record, $paths)) AS v FROM rec r)
            WHERE v IS NOT NULL AND json_type(v) <> 'NULL'),
     keys AS (SELECT key, count(*) AS n_held FROM kv GROUP BY key
              HAVING count(DISTINCT value) <= $max_values
                 AND bool_and(type IN ('VARCHAR', 'BOOLEAN', 'BIGINT', 'UBIGINT') AND length(value) <= 80))
SELECT kv.key, kv.value, count(m.sample_id) AS n_kept, count(*) - count(m.sample_id) AS n_dropped,
       any_value(keys.n_held) AS n_held
FROM kv JOIN keys ON keys.key = kv.key LEFT JOIN members m ON m.sample_id = kv.sample_id
GROUP BY kv.key, kv.value;

-- name: previous_subset
-- The subset of the same (training dataset, valuation set) pair made just before $subset_id.
SELECT * FROM subsets
WHERE dataset_name = $dataset_name AND valuation_set = $valuation_set AND subset_id <> $subset_id
  AND created_at <= $created_at
ORDER BY created_at DESC, subset_id
LIMIT 1;

-- name: subset_difference
-- Members of $subset_id that $other_id does not hold, best rank first ($limit of them; n: how many in all),
-- with their content in the dataset version $set_version.
WITH diff AS (
    SELECT m.sample_id, m.rank, m.score, count(*) OVER () AS n
    FROM subset_samples m
    WHERE m.subset_id = $subset_id
      AND m.sample_id NOT IN (SELECT sample_id FROM subset_samples WHERE subset_id = $other_id)
    ORDER BY m.rank
    LIMIT $limit)
SELECT diff.*, s.prompt, s.response, s.text, s.messages
FROM diff LEFT JOIN samples s ON s.set_kind = 'dataset' AND s.set_name = $set_name
                              AND s.set_version = $set_version AND s.sample_id = diff.sample_id
ORDER BY diff.rank;
