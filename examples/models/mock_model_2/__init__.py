"""A model in a package folder: how much the picture moves, slowly.

The second of the seed's two mock models, laid out as a model with helper modules would be:
the model class in :mod:`.model`, its image maths in :mod:`.features`. Load it as
``mock_model_2:MockModel2`` with this folder's parent on the import path.
"""

from __future__ import annotations

from .model import MockModel2

__all__ = ["MockModel2"]
