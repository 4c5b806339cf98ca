"""On PYTHONPATH (with tests/), every process of a run, torchrun's workers included, runs --fp8 on its CPU
through tests/fp8_stand_in.py."""

import fp8_stand_in

fp8_stand_in.install_in_process()
