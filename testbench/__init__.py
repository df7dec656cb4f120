"""The ramp-airflow test bench: real services on loopback, started per session.

Modules (one concept each):

- ``postgres``: a throwaway PostgreSQL 15 cluster (``running_postgres``).
- ``ramp_database`` (+ ``ramp_seed``, run in the RAMP virtualenv): a RAMP
  database created and seeded by ramp-database 0.10.1 itself.
- ``instance``: OpenSSH sshd standing in for EC2 instances (``running_instance``).
- ``ec2``: moto's EC2 API with loopback addresses (``running_ec2``).
- ``airflow_home``: a throwaway AIRFLOW_HOME with its metadata DB in the cluster.
- ``netguard``: refuses non-loopback socket connections in the test process.
- ``kit/``: the ``iris`` RAMP kit that ``ramp-test`` trains in about a second.

The pytest fixtures built on these live in ``tests/conftest.py``.
"""
