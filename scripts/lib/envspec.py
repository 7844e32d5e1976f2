"""Print the pip requirements of an envs/<model>.yml, one per line.

Reads only the small, fixed shape of our env files (no PyYAML needed on the
machine that builds the env): the items under `- pip:`, and the python version.
"""
import sys


def parse(path):
    pip, python, in_pip, pip_indent = [], None, False, 0
    with open(path) as f:
        for raw in f:
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
                pip.append(item[2:].strip())
            elif item.startswith("- python="):
                python = item.split("=", 1)[1]
    return pip, python


if __name__ == "__main__":
    reqs, py = parse(sys.argv[2])
    if sys.argv[1] == "pip":
        print("\n".join(reqs))
    elif sys.argv[1] == "python":
        print(py or "")
    else:
        sys.exit(f"usage: envspec.py pip|python ENV.yml")
