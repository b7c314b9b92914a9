-- ForValue catalog views. Loaded after schema.sql by forvalue.catalog.db.Catalog.init();
-- CREATE OR REPLACE, so a new release updates them in place.

-- The current (most recently registered) version of every training dataset.
CREATE OR REPLACE VIEW current_datasets AS
SELECT *
FROM datasets
QUALIFY row_number() OVER (PARTITION BY name ORDER BY registered_at DESC, version) = 1;

-- The current version of every valuation set.
CREATE OR REPLACE VIEW current_valuation_sets AS
SELECT *
FROM valuation_sets
QUALIFY row_number() OVER (PARTITION BY name ORDER BY registered_at DESC, version) = 1;

-- The most recent score run of every combination that makes scores different: training dataset and
-- its version, valuation set and its version (and the percent of it held out for evaluation), model,
-- method and feature configuration (a second
-- valuation set, model or dataset version never hides another's); and their scores (one row per
-- sample). Filter on dataset_name AND valuation_set (and model_id, when several models scored it).
CREATE OR REPLACE VIEW latest_score_runs AS
SELECT *
FROM score_runs
QUALIFY row_number() OVER (
    PARTITION BY dataset_name, dataset_version, valuation_set, valuation_version,
                 coalesce(valuation_holdout, 0), model_id, method, feature_config_id
    ORDER BY created_at DESC, score_run_id) = 1;

CREATE OR REPLACE VIEW latest_scores AS
SELECT s.*, r.created_at AS scored_at
FROM scores AS s
JOIN latest_score_runs AS r ON r.score_run_id = s.score_run_id;

-- The most recent subset of every (training dataset version, valuation set version, model, feature
-- configuration): the same keys as the scores it was cut from.
CREATE OR REPLACE VIEW latest_subsets AS
SELECT *
FROM subsets
QUALIFY row_number() OVER (
    PARTITION BY dataset_name, dataset_version, valuation_set, valuation_version, model_id, feature_config_id
    ORDER BY created_at DESC, subset_id) = 1;

-- Where did a subset come from: subset -> score run -> feature runs -> model, the dataset and
-- valuation set versions (with their source files), and the Dagster run id of every step.
CREATE OR REPLACE VIEW subset_lineage AS
SELECT
    sub.subset_id,
    sub.mode,
    sub.value,
    coalesce(sub.strategy, 'raw-mean') AS strategy,
    sub.n_selected,
    sub.n_total,
    sub.jsonl_path,
    sub.parquet_path,
    sub.created_at               AS subset_created_at,
    sub.dagster_run_id           AS subset_dagster_run_id,
    sr.score_run_id,
    sr.method                    AS score_method,
    coalesce(sr.valuation_holdout, 0) AS valuation_holdout,
    sr.n_valuation,
    sr.created_at                AS scored_at,
    sr.dagster_run_id            AS scores_dagster_run_id,
    sr.feature_config_id,
    tf.feature_config,
    tf.feature_run_id            AS train_feature_run_id,
    tf.dagster_run_id            AS train_features_dagster_run_id,
    tf.store_folder              AS feature_store_folder,
    vf.feature_run_id            AS val_feature_run_id,
    vf.dagster_run_id            AS val_features_dagster_run_id,
    m.model_id,
    m.name                       AS model_name,
    m.weights_hash               AS model_weights_hash,
    m.dtype                      AS model_dtype,
    m.spec                       AS model_spec,
    d.name                       AS dataset_name,
    d.version                    AS dataset_version,
    d.source_path                AS dataset_path,
    d.dagster_run_id             AS dataset_dagster_run_id,
    v.name                       AS valuation_set,
    v.version                    AS valuation_version,
    v.source_path                AS valuation_path,
    v.dagster_run_id             AS valuation_dagster_run_id,
    sub.code_version
FROM subsets AS sub
JOIN score_runs AS sr       ON sr.score_run_id = sub.score_run_id
LEFT JOIN feature_runs AS tf ON tf.feature_run_id = sr.train_feature_run_id
LEFT JOIN feature_runs AS vf ON vf.feature_run_id = sr.val_feature_run_id
LEFT JOIN models AS m        ON m.model_id = sr.model_id
LEFT JOIN datasets AS d      ON d.name = sr.dataset_name AND d.version = sr.dataset_version
LEFT JOIN valuation_sets AS v ON v.name = sr.valuation_set AND v.version = sr.valuation_version;

-- Every sample of a subset's training dataset version, kept or dropped: its rank in the strategy's order
-- (the members', and the dropped samples' nearest the cut: subset_near_cut; NULL farther away), its raw
-- For-Value score (a dropped sample's while the subset's scores are the pair's current ones), the value the
-- strategy ranked it by, the consistency check that dropped it, and the subset's cut: cut_rank is the last
-- kept rank (bottom_p: the first kept rank, it keeps the end of the order). Filter on subset_id.
CREATE OR REPLACE VIEW subset_kept_dropped AS
SELECT
    u.subset_id,
    s.sample_id,
    s.user_id,
    s.row_number,
    m.sample_id IS NOT NULL                   AS kept,
    coalesce(m.rank, nc.rank)                 AS rank,
    coalesce(m.score, nc.score, sc.score)     AS score,
    coalesce(m.ranked_by, nc.ranked_by)       AS ranked_by,
    sc.rank                                   AS score_rank,
    ck.check_name                             AS dropped_by_check,
    ck.check_value,
    ck.threshold                              AS check_threshold,
    CASE WHEN u.mode = 'bottom_p' THEN u.n_total - u.n_selected + 1 ELSE u.n_selected END AS cut_rank,
    u.mode,
    u.value,
    coalesce(u.strategy, 'raw-mean')          AS strategy
FROM subsets AS u
JOIN samples AS s ON s.set_kind = 'dataset' AND s.set_name = u.dataset_name
                 AND s.set_version = u.dataset_version
LEFT JOIN subset_samples AS m   ON m.subset_id = u.subset_id AND m.sample_id = s.sample_id
LEFT JOIN subset_near_cut AS nc ON nc.subset_id = u.subset_id AND nc.sample_id = s.sample_id
LEFT JOIN scores AS sc          ON sc.score_run_id = u.score_run_id AND sc.sample_id = s.sample_id
LEFT JOIN subset_checks AS ck   ON ck.subset_id = u.subset_id AND ck.sample_id = s.sample_id;
