-- ForValue catalog: the tables of docs/design.md, with primary keys.
-- Loaded by forvalue.catalog.db.Catalog.init(); every statement is idempotent (IF NOT EXISTS).
-- Every row carries the ids that produced it (set versions, model fingerprint, feature config,
-- code version, Dagster run id) so the views in views.sql can answer "where did this come from".
-- No foreign keys: DuckDB forbids updating or deleting referenced rows, which the transactional
-- "replace" writes need; the views join on the id columns instead.

-- A registered training dataset: one row per (name, content version). The current version of a
-- name is its most recently registered one (see the current_datasets view).
CREATE TABLE IF NOT EXISTS datasets (
    name            VARCHAR   NOT NULL,
    version         VARCHAR   NOT NULL,   -- sha256 of the file's bytes
    source_path     VARCHAR   NOT NULL,
    format          VARCHAR   NOT NULL,   -- jsonl, parquet, csv, hf
    n_rows          INTEGER   NOT NULL,   -- valid rows read
    n_samples       INTEGER   NOT NULL,   -- distinct samples (content ids)
    n_skipped       INTEGER   NOT NULL,   -- rows skipped as invalid (on_error = skip)
    column_mapping  JSON,
    registered_at   TIMESTAMP NOT NULL,
    code_version    VARCHAR   NOT NULL,
    dagster_run_id  VARCHAR,
    PRIMARY KEY (name, version)
);

-- A registered valuation set (the examples that define "valuable"); same shape as datasets.
CREATE TABLE IF NOT EXISTS valuation_sets (
    name            VARCHAR   NOT NULL,
    version         VARCHAR   NOT NULL,
    source_path     VARCHAR   NOT NULL,
    format          VARCHAR   NOT NULL,
    n_rows          INTEGER   NOT NULL,
    n_samples       INTEGER   NOT NULL,
    n_skipped       INTEGER   NOT NULL,
    column_mapping  JSON,
    registered_at   TIMESTAMP NOT NULL,
    code_version    VARCHAR   NOT NULL,
    dagster_run_id  VARCHAR,
    PRIMARY KEY (name, version)
);

-- The samples of a dataset or valuation set version, one row per distinct content id
-- (a duplicate row in the same file is kept once, at its first row number). The registration keeps
-- (set_kind, set_name, set_version, sample_id) unique (DISTINCT ON, replacing the version's rows in
-- one transaction); there is no key index: DuckDB holds an index in memory, unspilled, so a 10M-row
-- registration could not commit under the catalog's memory limit. (Catalogs created before keep
-- their primary key.)
CREATE TABLE IF NOT EXISTS samples (
    set_kind        VARCHAR   NOT NULL CHECK (set_kind IN ('dataset', 'valuation_set')),
    set_name        VARCHAR   NOT NULL,
    set_version     VARCHAR   NOT NULL,
    sample_id       VARCHAR   NOT NULL,   -- content hash (forvalue.data.samples.content_id)
    row_number      INTEGER,              -- 1-based row in the source file
    user_id         VARCHAR,              -- the file's own id column, if any
    kind            VARCHAR   NOT NULL,   -- prompt_response, messages, text
    prompt          VARCHAR,
    response        VARCHAR,
    text            VARCHAR,
    messages        JSON,
    images          JSON,
    label           JSON,
    record          JSON      NOT NULL    -- the raw row, exported again by curated subsets
);

-- A model that produced features: its fingerprint.
CREATE TABLE IF NOT EXISTS models (
    model_id        VARCHAR   NOT NULL PRIMARY KEY,  -- ModelFingerprint.id
    name            VARCHAR   NOT NULL,
    weights_hash    VARCHAR   NOT NULL,
    dtype           VARCHAR   NOT NULL,
    kind            VARCHAR   NOT NULL,
    spec            VARCHAR,                         -- how it was asked for (default, folder, hub id)
    first_seen      TIMESTAMP NOT NULL
);

-- One feature materialization of a set version: what was computed and what was reused.
CREATE TABLE IF NOT EXISTS feature_runs (
    feature_run_id     VARCHAR   NOT NULL PRIMARY KEY,
    set_kind           VARCHAR   NOT NULL CHECK (set_kind IN ('dataset', 'valuation_set')),
    set_name           VARCHAR   NOT NULL,
    set_version        VARCHAR   NOT NULL,
    model_id           VARCHAR   NOT NULL,
    feature_config_id  VARCHAR   NOT NULL,
    feature_config     JSON      NOT NULL,
    n_samples          INTEGER   NOT NULL,
    n_computed         INTEGER   NOT NULL,
    n_reused           INTEGER   NOT NULL,
    n_shards_written   INTEGER   NOT NULL,
    store_folder       VARCHAR   NOT NULL,
    seconds            DOUBLE,
    code_version       VARCHAR   NOT NULL,
    dagster_run_id     VARCHAR,
    created_at         TIMESTAMP NOT NULL
);

-- One scoring of a dataset version against a valuation set version (the history of `scores`).
CREATE TABLE IF NOT EXISTS score_runs (
    score_run_id           VARCHAR   NOT NULL PRIMARY KEY,
    dataset_name           VARCHAR   NOT NULL,
    dataset_version        VARCHAR   NOT NULL,
    valuation_set          VARCHAR   NOT NULL,
    valuation_version      VARCHAR   NOT NULL,
    model_id               VARCHAR   NOT NULL,
    feature_config_id      VARCHAR   NOT NULL,
    train_feature_run_id   VARCHAR,
    val_feature_run_id     VARCHAR,
    method                 VARCHAR   NOT NULL,
    valuation_holdout      DOUBLE,               -- percent of the valuation set held out for evaluation (0/NULL: none)
    n_valuation            INTEGER,              -- valuation samples scored against (the selection part)
    n_scores               INTEGER   NOT NULL,
    score_mean             DOUBLE,
    score_std              DOUBLE,
    seconds                DOUBLE,
    code_version           VARCHAR   NOT NULL,
    dagster_run_id         VARCHAR,
    created_at             TIMESTAMP NOT NULL
);

-- Current scores: one row per distinct training sample, keyed by
-- training dataset x valuation set x feature config (x model). Replaced in one transaction, which
-- keeps the key unique (the writer refuses repeated sample ids and deletes the key's old rows first);
-- there is no key index, as for samples: a 10M-row index does not fit the catalog's memory limit.
-- (Catalogs created before keep their primary key.)
CREATE TABLE IF NOT EXISTS scores (
    dataset_name       VARCHAR   NOT NULL,
    valuation_set      VARCHAR   NOT NULL,
    feature_config_id  VARCHAR   NOT NULL,
    model_id           VARCHAR   NOT NULL,
    sample_id          VARCHAR   NOT NULL,
    score              DOUBLE    NOT NULL,   -- For-Value: mean inner product with the valuation set
    rank               INTEGER   NOT NULL,   -- 1 = most valuable by score
    normalized         DOUBLE,               -- cosine with the mean valuation gradient (score / (norm ||mean G_v||))
    norm               DOUBLE,               -- ||G|| of the sample's stored features
    dataset_version    VARCHAR   NOT NULL,
    valuation_version  VARCHAR   NOT NULL,
    score_run_id       VARCHAR   NOT NULL,
    code_version       VARCHAR   NOT NULL,
    dagster_run_id     VARCHAR
);

-- A curated subset (top-k, top-p%, bottom-p% or "drop the lowest p%") and its exported files.
CREATE TABLE IF NOT EXISTS subsets (
    subset_id          VARCHAR   NOT NULL PRIMARY KEY,
    dataset_name       VARCHAR   NOT NULL,
    dataset_version    VARCHAR   NOT NULL,
    valuation_set      VARCHAR   NOT NULL,
    valuation_version  VARCHAR   NOT NULL,
    model_id           VARCHAR   NOT NULL,
    feature_config_id  VARCHAR   NOT NULL,
    score_run_id       VARCHAR   NOT NULL,
    mode               VARCHAR   NOT NULL CHECK (mode IN ('top_k', 'top_p', 'bottom_p', 'drop_lowest_p')),
    value              DOUBLE    NOT NULL,
    strategy           VARCHAR,              -- selection strategy (forvalue.curation.selection); NULL: raw-mean
    n_total            INTEGER   NOT NULL,
    n_selected         INTEGER   NOT NULL,
    jsonl_path         VARCHAR   NOT NULL,
    parquet_path       VARCHAR   NOT NULL,
    code_version       VARCHAR   NOT NULL,
    dagster_run_id     VARCHAR,
    created_at         TIMESTAMP NOT NULL
);

-- The members of a subset, written once with it (the writer refuses repeated sample ids; no key
-- index, as for scores: "drop the lowest 10%" of 10M samples keeps 9M rows).
CREATE TABLE IF NOT EXISTS subset_samples (
    subset_id   VARCHAR NOT NULL,
    sample_id   VARCHAR NOT NULL,
    rank        INTEGER NOT NULL,   -- position in the strategy's order (1 = first kept)
    score       DOUBLE  NOT NULL,   -- the sample's For-Value score
    ranked_by   DOUBLE              -- the value that set its place (Ranking.ranked_by; NULL in old rows)
);

-- The training samples a subset's consistency checks dropped (forvalue.curation.consistency), one row each:
-- which check dropped it, its value and the limit learned from the valuation set. A dropped sample
-- is never picked by the strategy; it is in subset_samples only when the subset is larger than
-- what passed.
CREATE TABLE IF NOT EXISTS subset_checks (
    subset_id    VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    check_name   VARCHAR NOT NULL,   -- the first check that failed (grounding)
    check_value  DOUBLE,             -- its value for the sample (grounding: IFD over the first 48 response tokens)
    threshold    DOUBLE  NOT NULL    -- the limit: the valuation set's maximum (or quantile)
);

-- The dropped samples nearest a subset's cut (up to forvalue.curation.selection.NEAR_CUT), with their place
-- in the strategy's order: the round-robin strategies order the samples only a little past the cut, so a
-- dropped sample farther away has no rank. View subset_kept_dropped joins them with the members.
CREATE TABLE IF NOT EXISTS subset_near_cut (
    subset_id   VARCHAR NOT NULL,
    sample_id   VARCHAR NOT NULL,
    rank        INTEGER NOT NULL,   -- position in the strategy's order
    score       DOUBLE  NOT NULL,   -- the sample's For-Value score
    ranked_by   DOUBLE              -- the value that set its place (forvalue.curation.selection.Ranking.ranked_by)
);

-- Fine-tuning runs on a subset (filled by the training/MLflow layer).
CREATE TABLE IF NOT EXISTS training_runs (
    training_run_id  VARCHAR   NOT NULL PRIMARY KEY,
    subset_id        VARCHAR,
    base_model_id    VARCHAR,
    mlflow_run_id    VARCHAR,
    status           VARCHAR,
    metrics          JSON,
    code_version     VARCHAR,
    dagster_run_id   VARCHAR,
    created_at       TIMESTAMP NOT NULL
);

-- Columns added after the first release: catalogs created before get them here (NULL in old rows).
ALTER TABLE scores ADD COLUMN IF NOT EXISTS normalized DOUBLE;
ALTER TABLE scores ADD COLUMN IF NOT EXISTS norm DOUBLE;
ALTER TABLE subsets ADD COLUMN IF NOT EXISTS strategy VARCHAR;
ALTER TABLE score_runs ADD COLUMN IF NOT EXISTS valuation_holdout DOUBLE;
ALTER TABLE score_runs ADD COLUMN IF NOT EXISTS n_valuation INTEGER;
ALTER TABLE subsets ADD COLUMN IF NOT EXISTS checks JSON;   -- {check: {threshold, quantile, failed, not_judged}}, or why none ran
ALTER TABLE subset_samples ADD COLUMN IF NOT EXISTS ranked_by DOUBLE;
