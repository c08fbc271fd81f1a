"""Fine-tuning: a classifier (or regressor) on any model bertcli loads, trained on labelled examples.

The API the `finetune` and `glue` commands share (each documented where it is defined):

    spec = load_model_for_finetune(path)          # loading.py: config, tokenizer, encoder weights
    config = load_finetune_config(yaml, sets)     # config.py: the recipe
    train = [Example(text, text_pair_or_None, label), ...]
    labels = label_names(train, "--train FILE")   # data.py: label values in id order (classification)
    run = finetune_one(spec, train, validation, test, "classification", labels, config, seed=1, init="pretrained")
    run.results["validation"]                     # {metric: value}, last epoch
    run.validation_outputs, run.test_outputs      # label ids (or values) per example
    save_classifier(dir, spec, run, task_type, labels, config)   # run.py: HF BertForSequenceClassification dir
    metrics.accuracy / f1 / matthews_correlation / pearson / spearman

This package does not know GLUE's file layouts or submission format (glue.py does).
"""

from bertcli.finetune.config import FinetuneConfig, load_finetune_config  # noqa: F401
from bertcli.finetune.data import Example, Fields, encode, label_names, read_split  # noqa: F401
from bertcli.finetune.loading import ModelSpec, build_classifier, load_model_for_finetune  # noqa: F401
from bertcli.finetune.run import save_classifier, summarize  # noqa: F401
from bertcli.finetune.trainer import FinetuneRun, finetune_one  # noqa: F401
