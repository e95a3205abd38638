"""Cross-checks against the official ``global-open-sdk-python`` running in ``.venv-antom-sdk``.

``worker.py`` runs inside that virtualenv; :class:`AntomSdk` drives it from the test process and
the ``antom_sdk`` fixture (``fixtures.py``) shares one worker across the session.
"""

from tests.antom_sdk.bridge import AntomSdk, AntomSdkError, AntomSdkWorkerDied, SdkRequest

__all__ = ["AntomSdk", "AntomSdkError", "AntomSdkWorkerDied", "SdkRequest"]
