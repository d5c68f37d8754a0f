# The repository's tests (core and every backend) use the harness and conformance kit the way a
# third-party backend's tests would: by opting into the hami.testing pytest plugin.
pytest_plugins = ["hami.testing"]
