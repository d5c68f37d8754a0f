pytest_plugins = ["hami.testing"]
