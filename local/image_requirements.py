"""Print the requirements one container image installs (run in the Dockerfile's <target>-wheels stages).

    python image_requirements.py "EXTRAS" "DROP" > requirements.txt

pyproject.toml's dependencies, plus the named extras, less the distributions in
DROP (what that image never imports). Standard library only: it runs before
anything is installed. A DROP entry that names no dependency is an error, so a
renamed dependency cannot silently stay in an image.
"""
import re
import sys
import tomllib


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def main(extras: str, drop: str) -> None:
    project = tomllib.load(open("pyproject.toml", "rb"))["project"]
    requirements = project["dependencies"] + [r for extra in extras.split() for r in project["optional-dependencies"][extra]]
    dropped = {_name(d) for d in drop.split()}
    unknown = dropped - {_name(r) for r in requirements}
    if unknown:
        sys.exit(f"DROP names no dependency in pyproject.toml: {sorted(unknown)}")
    print("\n".join(r for r in requirements if _name(r) not in dropped))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
