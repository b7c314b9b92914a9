"""Run config of the fine-tune assets (launchpad fields): ``TrainFields`` (finetune_run),
``EvalFields`` (eval_run), ``ComparisonConfig`` (finetune_comparison). ``steps`` left empty takes the
``finetune`` resource's value (FinetuneResource, FORVALUE_FT_STEPS)."""

from typing import List, Optional

from dagster import Config
from pydantic import Field

from resources._fields import config_class, dataclass_fields


class _Train(Config):
    steps: Optional[int] = Field(default=None, description="optimizer steps; empty: the finetune resource's steps "
                                                           "(FORVALUE_FT_STEPS, default 30)")
    dtype: str = Field(default="", description="empty: fp32 on CPU / bf16 on GPU for LoRA, fp32 for full")

    def train_config(self, feature_config, *, default_steps: int = 30, **overrides):
        """The library's TrainConfig; tokenisation follows the feature store's config."""
        from forvalue.training.finetune import TrainConfig

        return TrainConfig(**{name: getattr(self, name) for name in TRAIN_FIELDS},
                           steps=default_steps if self.steps is None else self.steps,
                           positions=feature_config.positions, chat_template=feature_config.chat_template,
                           max_length=feature_config.max_length, **overrides)


class _Eval(Config):
    def eval_config(self, feature_config, *, accuracy: bool | None = None):
        from forvalue.training.evaluate import EvalConfig

        values = {name: getattr(self, name) for name in EVAL_FIELDS}
        values.update(accuracy=self.accuracy if accuracy is None else accuracy,
                      answer_field=self.answer_field or None, loss_limit=self.loss_limit or None,
                      accuracy_limit=self.accuracy_limit or None)
        return EvalConfig(**values, chat_template=feature_config.chat_template, max_length=feature_config.max_length)


# the fields of forvalue.training.finetune.TrainConfig / forvalue.training.evaluate.EvalConfig a run may set
TRAIN_FIELDS = ("method", "batch_size", "lr", "seed", "lora_r", "lora_alpha", "lora_targets", "lora_layers")
EVAL_FIELDS = ("accuracy", "extractor", "answer_field", "max_new_tokens", "loss_limit", "accuracy_limit")


def _train_fields():
    from forvalue.training.finetune import TrainConfig

    return dataclass_fields(TrainConfig, include=TRAIN_FIELDS)


def _eval_fields():
    from forvalue.training.evaluate import EvalConfig

    return dataclass_fields(EvalConfig, include=EVAL_FIELDS)


TrainFields = config_class("TrainFields", _Train, "Fine-tuning hyper-parameters (forvalue.training.finetune.TrainConfig).",
                           _train_fields())
EvalFields = config_class("EvalFields", _Eval, "Evaluation settings (forvalue.training.evaluate.EvalConfig).", _eval_fields())


class ComparisonConfig(TrainFields, EvalFields):
    strategies: List[str] = Field(default=["top", "random", "bottom", "full"],
                                  description="top, random, bottom (k samples each) and/or full")
    k: int = Field(default=0, description="samples per subset; 0: the size of the latest curated subset")
    seeds: List[int] = Field(default=[0], description="one fine-tune per strategy and seed")
    include_base: bool = Field(default=True, description="also evaluate the base model (no fine-tuning)")
