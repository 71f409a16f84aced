"""The four stages and ``convert`` as library functions: ``verb(Workspace, Config) -> result``; the CLI calls these.

from pipeline.workspace import Workspace
from pipeline.verbs import PrepareConfig, prepare
summary = prepare(Workspace("work"), PrepareConfig(dataset="synthetic"))
"""

from pipeline.verbs.common import ExecutionConfig
from pipeline.verbs.convert import ConvertConfig, ConvertResult, convert
from pipeline.verbs.evaluate import EvaluateConfig, EvaluateResult, evaluate
from pipeline.verbs.extract import ExtractConfig, extract
from pipeline.verbs.prepare import PrepareConfig, prepare
from pipeline.verbs.train import TrainConfig, TrainResult, train

__all__ = [
    "ExecutionConfig",
    "PrepareConfig",
    "prepare",
    "ExtractConfig",
    "extract",
    "TrainConfig",
    "TrainResult",
    "train",
    "EvaluateConfig",
    "EvaluateResult",
    "evaluate",
    "ConvertConfig",
    "ConvertResult",
    "convert",
]
