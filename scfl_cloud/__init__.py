"""Cloud skill library and federated aggregator (FastAPI + SQLAlchemy). Never imports ROS, never holds a secret key."""
