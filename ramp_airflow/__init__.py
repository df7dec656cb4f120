"""ramp-airflow: train RAMP submissions on EC2 instances with Apache Airflow."""

__version__ = "0.1.0"
