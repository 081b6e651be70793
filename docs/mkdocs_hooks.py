"""mkdocs hook: results that a running build has not written yet.

``docs/table.md`` and the benchmark pages link the table's report
(``benchmarks/results/table/README.md``, ``protocol.md``), which ``attnas table report``
writes when the table build finishes. Until then the site gets a one-line placeholder page
for each of those paths, and only those: any other missing target still fails the strict
build. Once the file exists it is used as is.
"""

from __future__ import annotations

#: result pages that a build writes later, and what writes them
PENDING = {
    "benchmarks/results/table/README.md": "`attnas table report` (the table's results)",
    "benchmarks/results/table/protocol.md": "`attnas table report` (the protocol study)",
}


def on_files(files, config):
    from mkdocs.structure.files import File  # imported here: tests read PENDING without mkdocs

    for uri, writer in PENDING.items():
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(
                config, uri, content=f"# Not written yet\n\n`{uri}` is written by {writer} "
                                     "when the table build finishes.\n"))
    return files
