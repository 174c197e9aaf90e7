"""The built-in demo data: a small synthetic CUHK-PEDES stand-in, so the project runs offline.

``generator`` writes the files (``reid_raw.json`` and the images), ``people`` samples each
identity's attributes and ``drawing`` renders a person as a pedestrian crop.
"""

from timam.sources.demo.generator import SPLITS, generate_demo_dataset
from timam.sources.demo.people import DemoPerson, sample_people

__all__ = ["SPLITS", "DemoPerson", "generate_demo_dataset", "sample_people"]
