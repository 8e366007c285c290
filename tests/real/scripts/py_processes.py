import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading

results = []
lock = threading.Lock()


def work(n):
    s = sum(i * i for i in range(n))
    with lock:
        results.append(s)


threads = [threading.Thread(target=work, args=(20000 + i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("threads", len(results), sorted(results)[0], sorted(results)[-1])
done = subprocess.run(
    [sys.executable, "-c", "import sys; print(6 * 7); sys.exit(3)"], capture_output=True, text=True
)
print("subprocess", done.stdout.strip(), done.returncode)
piped = subprocess.run("echo one two | tr a-z A-Z", shell=True, capture_output=True, text=True)
print("shell", piped.stdout.strip())
db = sqlite3.connect(":memory:")
db.execute("create table t(x integer)")
db.executemany("insert into t values (?)", [(i,) for i in range(100)])
print("sqlite3", db.execute("select sum(x), count(*), max(x) from t").fetchone())
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "f")
    with open(path, "w") as f:
        f.write("data")
    print("tempfile", open(path).read(), os.path.exists(path))
print("tempdir gone", not os.path.exists(d))
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()


def serve():
    conn, _ = server.accept()
    conn.sendall(conn.recv(100).upper())
    conn.close()


t = threading.Thread(target=serve)
t.start()
client = socket.create_connection(server.getsockname())
client.sendall(b"ping")
print("socket", client.recv(100))
t.join()
