"""`kedro run --pipelines zero_shot`: prepare -> the pretrained model as a checkpoint -> evaluate.

With ``params:model`` a CLIP-family dual encoder (``family: dual_encoder``; an open_clip checkpoint
file such as RemoteCLIP's, or a transformers directory), the model is scored exactly as a trained
one: the same metrics, report, figures and MLflow run. Its checkpoint is saved as a version of
``model_checkpoint`` naming the weights (source and sha256), so ``--pipelines index``, ``timam
serve`` and an evaluate-only rerun use it like any other.
"""

from kedro.pipeline import Node, Pipeline

from timam.pipelines.evaluate.pipeline import create_pipeline as create_evaluate_pipeline
from timam.pipelines.prepare.pipeline import create_pipeline as create_prepare_pipeline
from timam.pipelines.zero_shot.nodes import pretrained_checkpoint


def create_pipeline(**kwargs) -> Pipeline:
    load = Pipeline(
        [
            Node(
                pretrained_checkpoint,
                inputs=["captions", "caption_tokens", "params:model"],
                outputs="model_checkpoint",
                name="pretrained_checkpoint",
            )
        ],
        tags="zero_shot",
    )
    return create_prepare_pipeline() + load + create_evaluate_pipeline()
