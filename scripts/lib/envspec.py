"""Print the pip requirements of an envs/<model>.yml, one per line.

Reads only the small, fixed shape of our env files (no PyYAML needed on the
machine that builds the env): the items under `- pip:`, and the python version.

`pip` prints one line per pip install step. A comment line `# evalkit: then`
inside the pip list starts the next step: a venv build installs the steps one
after the other, so a later step resolves against what the earlier ones pinned
(pip's resolver can backtrack for a very long time when dvc[s3] and
moto[server] are resolved together). conda ignores the marker (a comment).
"""
import sys


THEN = "# evalkit: then"


def parse(path):
    """-> (pip install steps, each a list of requirements; python version or None)."""
    steps, python, in_pip, pip_indent = [[]], None, False, 0
    with open(path) as f:
        for raw in f:
            if in_pip and raw.strip().startswith(THEN):
                steps.append([])
                continue
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            item = line.strip()
            if in_pip and indent <= pip_indent:
                in_pip = False
            if item in ("- pip:",):
                in_pip, pip_indent = True, indent
                continue
            if in_pip and item.startswith("- "):
                steps[-1].append(item[2:].strip())
            elif item.startswith("- python="):
                python = item.split("=", 1)[1]
    return [st for st in steps if st], python


if __name__ == "__main__":
    steps, py = parse(sys.argv[2])
    if sys.argv[1] == "pip":
        print("\n".join(" ".join(st) for st in steps))
    elif sys.argv[1] == "python":
        print(py or "")
    else:
        sys.exit(f"usage: envspec.py pip|python ENV.yml")
