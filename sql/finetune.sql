-- Fine-tune and eval runs in the ForValue catalog. Loaded by forvalue/catalog/finetune_runs.py,
-- which runs the `schema` block once per catalog file (every statement idempotent) and takes the
-- other blocks as named queries ($name parameters, always bound).
-- Every fine-tune run is a row of `training_runs` (sql/schema.sql); `finetune_details` extends it
-- 1:1 with what that table has no column for (pair, strategy, k, seed, subset digest, adapter).

-- name: schema
CREATE TABLE IF NOT EXISTS finetune_details (
    training_run_id       VARCHAR   NOT NULL PRIMARY KEY,
    kind                  VARCHAR   NOT NULL CHECK (kind IN ('curated', 'comparison')),
    dataset_name          VARCHAR   NOT NULL,
    dataset_version       VARCHAR   NOT NULL,
    valuation_set         VARCHAR   NOT NULL,
    valuation_version     VARCHAR   NOT NULL,
    strategy              VARCHAR   NOT NULL,  -- curated: the subset's selection strategy (balanced, ...); comparison: top/random/bottom/full
    k                     INTEGER   NOT NULL,  -- samples trained on
    seed                  INTEGER   NOT NULL,
    method                VARCHAR   NOT NULL,  -- lora | full
    steps                 INTEGER   NOT NULL,
    subset_digest         VARCHAR   NOT NULL,  -- sha256 of the sorted sample ids (also the MLflow dataset digest)
    comparison_id         VARCHAR,
    output_dir            VARCHAR,             -- adapter (or model) folder; also an MLflow artifact
    weights_sha256        VARCHAR,
    params                JSON,
    tracking_uri          VARCHAR,
    mlflow_experiment_id  VARCHAR,
    dagster_asset_key     VARCHAR
);

CREATE TABLE IF NOT EXISTS eval_runs (
    eval_run_id             VARCHAR   NOT NULL PRIMARY KEY,
    training_run_id         VARCHAR,             -- NULL: the base model itself
    mlflow_run_id           VARCHAR,
    finetune_mlflow_run_id  VARCHAR,
    valuation_set           VARCHAR   NOT NULL,
    valuation_version       VARCHAR   NOT NULL,
    model_fingerprint       VARCHAR   NOT NULL,
    val_loss                DOUBLE,
    perplexity              DOUBLE,
    accuracy                DOUBLE,
    n_eval                  INTEGER,
    metrics                 JSON,
    code_version            VARCHAR   NOT NULL,
    dagster_run_id          VARCHAR,
    created_at              TIMESTAMP NOT NULL
);

-- What every evaluation was computed on (forvalue/data/holdout.py): eval_source 'file' (an evaluation
-- file: eval_set its path, eval_version its sha256), 'holdout' (the hash-split part of the valuation
-- set the selection never scored against: eval_holdout percent) or 'valuation' (the valuation set
-- that chose the subset: eval_seen_by_selection true, its losses favour the curated subset).
ALTER TABLE finetune_details ADD COLUMN IF NOT EXISTS eval_source VARCHAR;
ALTER TABLE finetune_details ADD COLUMN IF NOT EXISTS eval_set VARCHAR;
ALTER TABLE finetune_details ADD COLUMN IF NOT EXISTS eval_version VARCHAR;
ALTER TABLE finetune_details ADD COLUMN IF NOT EXISTS eval_holdout DOUBLE;
ALTER TABLE finetune_details ADD COLUMN IF NOT EXISTS n_eval INTEGER;
ALTER TABLE finetune_details ADD COLUMN IF NOT EXISTS eval_seen_by_selection BOOLEAN;
ALTER TABLE eval_runs ADD COLUMN IF NOT EXISTS eval_source VARCHAR;
ALTER TABLE eval_runs ADD COLUMN IF NOT EXISTS eval_set VARCHAR;
ALTER TABLE eval_runs ADD COLUMN IF NOT EXISTS eval_version VARCHAR;
ALTER TABLE eval_runs ADD COLUMN IF NOT EXISTS eval_holdout DOUBLE;
ALTER TABLE eval_runs ADD COLUMN IF NOT EXISTS eval_seen_by_selection BOOLEAN;

-- The samples every fine-tune trained on (its subset, or a comparison's random, bottom or full set),
-- written with its training_runs row: "which fine-tune runs trained on sample S".
CREATE TABLE IF NOT EXISTS training_samples (
    training_run_id  VARCHAR NOT NULL,
    sample_id        VARCHAR NOT NULL
);

-- One row per (comparison, strategy, seed): same steps and batch size for every strategy.
CREATE TABLE IF NOT EXISTS finetune_comparisons (
    comparison_id       VARCHAR   NOT NULL,
    dataset_name        VARCHAR   NOT NULL,
    dataset_version     VARCHAR   NOT NULL,
    valuation_set       VARCHAR   NOT NULL,
    valuation_version   VARCHAR   NOT NULL,
    score_run_id        VARCHAR,
    curated_subset_id   VARCHAR,
    strategy            VARCHAR   NOT NULL,     -- top, random, bottom, full, base (no fine-tuning)
    k                   INTEGER   NOT NULL,
    seed                INTEGER   NOT NULL,
    steps               INTEGER   NOT NULL,
    training_run_id     VARCHAR,
    mlflow_run_id       VARCHAR,
    val_loss            DOUBLE,
    perplexity          DOUBLE,
    accuracy            DOUBLE,
    n_eval              INTEGER,
    code_version        VARCHAR   NOT NULL,
    dagster_run_id      VARCHAR,
    created_at          TIMESTAMP NOT NULL,
    PRIMARY KEY (comparison_id, strategy, seed)
);
ALTER TABLE finetune_comparisons ADD COLUMN IF NOT EXISTS eval_source VARCHAR;
ALTER TABLE finetune_comparisons ADD COLUMN IF NOT EXISTS eval_set VARCHAR;
ALTER TABLE finetune_comparisons ADD COLUMN IF NOT EXISTS eval_version VARCHAR;
ALTER TABLE finetune_comparisons ADD COLUMN IF NOT EXISTS eval_holdout DOUBLE;
ALTER TABLE finetune_comparisons ADD COLUMN IF NOT EXISTS eval_seen_by_selection BOOLEAN;

-- Governance: every fine-tuned model back to its data (subset -> scores -> features -> model ->
-- dataset and valuation set files), with the MLflow and Dagster run ids on the way.
CREATE OR REPLACE VIEW training_run_lineage AS
SELECT
    tr.training_run_id,
    tr.mlflow_run_id,
    tr.status,
    tr.base_model_id,
    tr.created_at                 AS trained_at,
    tr.dagster_run_id             AS training_dagster_run_id,
    fd.kind,
    fd.strategy,
    fd.k,
    fd.seed,
    fd.method,
    fd.steps,
    fd.subset_digest,
    fd.comparison_id,
    fd.output_dir,
    fd.weights_sha256,
    fd.tracking_uri,
    fd.eval_source,
    fd.eval_set,
    fd.eval_version,
    fd.eval_holdout,
    fd.n_eval,
    fd.eval_seen_by_selection,
    (tr.metrics ->> 'val_loss')::DOUBLE AS eval_loss,
    fd.dataset_name,
    fd.dataset_version,
    fd.valuation_set,
    fd.valuation_version,
    tr.subset_id,
    sl.mode                       AS subset_mode,
    sl.value                      AS subset_value,
    sl.strategy                   AS subset_strategy,
    sl.jsonl_path                 AS subset_jsonl,
    sl.score_run_id,
    sl.score_method,
    sl.valuation_holdout,
    sl.train_feature_run_id,
    sl.val_feature_run_id,
    sl.feature_config_id,
    sl.model_id                   AS scoring_model_id,
    sl.dataset_path,
    sl.valuation_path,
    sl.subset_dagster_run_id,
    sl.scores_dagster_run_id,
    sl.dataset_dagster_run_id
FROM training_runs AS tr
LEFT JOIN finetune_details AS fd ON fd.training_run_id = tr.training_run_id
LEFT JOIN subset_lineage AS sl   ON sl.subset_id = tr.subset_id;

-- name: insert_training_run
INSERT INTO training_runs (training_run_id, subset_id, base_model_id, mlflow_run_id, status, metrics,
                           code_version, dagster_run_id, created_at)
VALUES ($training_run_id, $subset_id, $base_model_id, $mlflow_run_id, $status, $metrics,
        $code_version, $dagster_run_id, $created_at);

-- name: insert_finetune_details
INSERT INTO finetune_details (training_run_id, kind, dataset_name, dataset_version, valuation_set,
                              valuation_version, strategy, k, seed, method, steps, subset_digest,
                              comparison_id, output_dir, weights_sha256, params, tracking_uri,
                              mlflow_experiment_id, dagster_asset_key, eval_source, eval_set, eval_version,
                              eval_holdout, n_eval, eval_seen_by_selection)
VALUES ($training_run_id, $kind, $dataset_name, $dataset_version, $valuation_set, $valuation_version,
        $strategy, $k, $seed, $method, $steps, $subset_digest, $comparison_id, $output_dir,
        $weights_sha256, $params, $tracking_uri, $mlflow_experiment_id, $dagster_asset_key, $eval_source,
        $eval_set, $eval_version, $eval_holdout, $n_eval, $eval_seen_by_selection);

-- name: latest_training_run
SELECT tr.*, fd.* EXCLUDE (training_run_id)
FROM training_runs AS tr
JOIN finetune_details AS fd ON fd.training_run_id = tr.training_run_id
WHERE fd.dataset_name = $dataset_name AND fd.valuation_set = $valuation_set AND fd.kind = 'curated'
  AND tr.status = 'finished'
ORDER BY tr.created_at DESC, tr.training_run_id
LIMIT 1;

-- name: insert_training_samples
INSERT INTO training_samples (training_run_id, sample_id)
SELECT $training_run_id, sample_id FROM new_training_samples;

-- name: insert_eval_run
INSERT INTO eval_runs (eval_run_id, training_run_id, mlflow_run_id, finetune_mlflow_run_id, valuation_set,
                       valuation_version, model_fingerprint, val_loss, perplexity, accuracy, n_eval, metrics,
                       code_version, dagster_run_id, created_at, eval_source, eval_set, eval_version,
                       eval_holdout, eval_seen_by_selection)
VALUES ($eval_run_id, $training_run_id, $mlflow_run_id, $finetune_mlflow_run_id, $valuation_set,
        $valuation_version, $model_fingerprint, $val_loss, $perplexity, $accuracy, $n_eval, $metrics,
        $code_version, $dagster_run_id, $created_at, $eval_source, $eval_set, $eval_version, $eval_holdout,
        $eval_seen_by_selection);

-- name: insert_comparison_row
INSERT INTO finetune_comparisons (comparison_id, dataset_name, dataset_version, valuation_set, valuation_version,
                                  score_run_id, curated_subset_id, strategy, k, seed, steps, training_run_id,
                                  mlflow_run_id, val_loss, perplexity, accuracy, n_eval, code_version,
                                  dagster_run_id, created_at, eval_source, eval_set, eval_version, eval_holdout,
                                  eval_seen_by_selection)
VALUES ($comparison_id, $dataset_name, $dataset_version, $valuation_set, $valuation_version, $score_run_id,
        $curated_subset_id, $strategy, $k, $seed, $steps, $training_run_id, $mlflow_run_id, $val_loss,
        $perplexity, $accuracy, $n_eval, $code_version, $dagster_run_id, $created_at, $eval_source, $eval_set,
        $eval_version, $eval_holdout, $eval_seen_by_selection);

-- name: comparison_summary
SELECT strategy,
       any_value(k)                 AS k,
       count(*)                     AS runs,
       avg(val_loss)                AS val_loss_mean,
       stddev_samp(val_loss)        AS val_loss_std,
       avg(perplexity)              AS perplexity_mean,
       avg(accuracy)                AS accuracy_mean,
       stddev_samp(accuracy)        AS accuracy_std
FROM finetune_comparisons
WHERE comparison_id = $comparison_id
GROUP BY strategy
ORDER BY CASE strategy WHEN 'top' THEN 0 WHEN 'random' THEN 1 WHEN 'bottom' THEN 2 WHEN 'full' THEN 3 ELSE 4 END;

-- name: subset_members
SELECT sample_id, rank, score
FROM subset_samples
WHERE subset_id = $subset_id
ORDER BY rank;

