#!/usr/bin/env python3
"""Users and sample data for the MongoDB tests (run by scripts/db-servers.sh before --auth).

Usage: mongo-seed.py PORT DB OWNER OWNER_PW RO RO_PW

- OWNER: dbOwner of DB (can write: the end-to-end read-only tests use it, so that only the
  agent's own layers stand between a hostile console and a write); RO: role `read` on DB.
- customers: Unicode names, mixed types (`credit` int/long/string), missing and null fields,
  nested `address.city`, an array of documents `contacts`, a private-looking `iban`.
- orders: dates, decimals, ObjectId references; `order_lines` for $lookup.
- payroll: a collection the tests mark private.
- open_orders: a view on orders.
- big: BIG_ROWS documents for streaming and timeouts.
"""
import datetime
import sys

from bson.decimal128 import Decimal128
from pymongo import MongoClient

BIG_ROWS = 50_000

port, db_name, owner, owner_pw, ro, ro_pw = sys.argv[1:7]
client = MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=10_000)
for user, pw, role in ((owner, owner_pw, "dbOwner"), (ro, ro_pw, "read")):
    client.admin.command("createUser", user, pwd=pw, roles=[{"role": role, "db": db_name}])
db = client[db_name]

names = ["Müller GmbH", "Łódź Trading", "株式会社サンプル", "Émile & Fils", "O'Brien Ltd", "श्री गणेश"]
customers = []
for i in range(1, 61):
    doc = {
        "_id": i,
        "code": f"C{i:03d}",
        "name": names[i % len(names)] + f" {i}",
        "country": ["DE", "PL", "JP", "FR", "IE", "IN"][i % 6],
        "iban": f"DE{i:020d}",
        "address": {"city": ["Berlin", "Łódź", "東京", "Paris", "Dublin", "Pune"][i % 6], "zip": f"{10000 + i}"},
        "contacts": [{"kind": "email", "value": f"c{i}@example.com"}],
    }
    if i % 3 == 0:
        doc["credit"] = i * 100  # int
    elif i % 3 == 1:
        doc["credit"] = 2**40 + i  # long
    else:
        doc["credit"] = "on request"  # string: mixed types
    if i % 5 == 0:
        doc["phone"] = None
    elif i % 2 == 0:
        doc["phone"] = f"+49 30 {i:06d}"
    customers.append(doc)
db.customers.insert_many(customers)

start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
orders = [
    {
        "_id": i,
        "customer_id": 1 + i % 60,
        "placed_at": start + datetime.timedelta(days=i),
        "total": Decimal128(f"{i * 10}.50"),
        "status": ["open", "shipped", "paid"][i % 3],
    }
    for i in range(1, 201)
]
db.orders.insert_many(orders)
db.order_lines.insert_many([{"order_id": 1 + i % 200, "sku": f"SKU-{i % 17}", "qty": i % 5 + 1} for i in range(400)])
db.payroll.insert_many([{"employee": f"E{i}", "salary": 50_000 + i} for i in range(10)])
db.command("create", "open_orders", viewOn="orders", pipeline=[{"$match": {"status": "open"}}])
db.orders.create_index("customer_id")
db.customers.create_index("code", unique=True)
batch = []
for i in range(BIG_ROWS):
    batch.append({"n": i, "k": i % 97, "s": "x" * 40})
    if len(batch) == 10_000:
        db.big.insert_many(batch, ordered=False)
        batch = []
if batch:
    db.big.insert_many(batch, ordered=False)
print(f"mongo-seed: {db_name} seeded", file=sys.stderr)
