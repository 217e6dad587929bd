"""The bundle.app fixtures (tiny random-weight checkpoints) for the zoo tests."""

from tests.app.conftest import legopet_files, petdds_files  # noqa: F401
from tests.upete_trained import upete_run  # noqa: F401
