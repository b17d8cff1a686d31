"""Session-wide fixtures, one module per concern under tests/fixtures/.

servers: embedded Valkey and a real S3 server (SeaweedFS `weed`); ray_cluster: the one Ray
cluster shared by the session; gateway: a running Serve app on a free port; registry: an OCI
registry (docker-registry) with and without auth.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.fixtures.servers import *  # noqa: E402,F401,F403
from tests.fixtures.ray_cluster import *  # noqa: E402,F401,F403
from tests.fixtures.gateway import *  # noqa: E402,F401,F403
from tests.fixtures.registry import *  # noqa: E402,F401,F403
