"""Reads a Parquet file with pyarrow and prints what pyarrow sees as one JSON document:
the schema (column name -> Arrow type), the row groups' sizes, and every row with `ts` as an
ISO 8601 string of the timezone-aware datetime pyarrow returns. Used by the end-to-end export
tests to check that an export reads in Python with exact values and UTC timestamps."""

import json
import sys

import pyarrow.parquet as pq


def main(path):
    f = pq.ParquetFile(path)
    table = f.read()
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    rows = []
    for i in range(table.num_rows):
        row = {}
        for name, values in columns.items():
            v = values[i]
            row[name] = v.isoformat() if name == "ts" else v
        rows.append(row)
    print(json.dumps({
        "schema": {field.name: str(field.type) for field in table.schema},
        "row_groups": [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)],
        "compression": f.metadata.row_group(0).column(3).compression if f.metadata.num_row_groups else None,
        "rows": rows,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
