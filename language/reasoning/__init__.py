"""What the reasoning-model references (DeepSeek-R1, gpt-oss-120b) share: the answer rules both
evaluation scripts apply alike (answers.py), PRM800K's MATH grading (math_grader.py) and
LiveCodeBench's judging in the kit's sandbox (livecodebench.py, lcb_runner.py). Each model's
folder holds only the rules where its reference differs."""
