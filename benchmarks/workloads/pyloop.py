# A pure-Python workload for the CPython benchmark: dicts, strings, calls, integer arithmetic.
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


table = {}
for i in range(60000):
    table[str(i)] = i * i
words = sorted(table, key=lambda k: (len(k), k[::-1]))
total = sum(table[w] % 977 for w in words)
print(total, fib(20), len(" ".join(words[:5000])))
