"""The demo (``bash scripts/demo.sh``): the whole RAMP training backend on one machine.

The real path, pointed at stand-ins: PostgreSQL holding a RAMP database with the bench event
(a few submissions, one of which fails), moto as EC2 (instances get loopback addresses), an sshd
as every instance, and a real Airflow (api-server with its UI, scheduler, triggerer,
dag-processor) running the project's DAGs. Everything binds to 127.0.0.1; AWS is never contacted.

``python -m testbench.demo [--exit-when-done]`` (see ``__main__``); the pieces are in
``run`` (start, watch, stop), ``report`` (progress lines and the leaderboard) and ``forward`` (the
UI's port, relayed from the machine's loopback into the demo's network namespace).
"""
