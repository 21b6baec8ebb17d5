module lumenbench/gotlsworker

go 1.17
