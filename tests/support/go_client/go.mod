module lumentest/goclient

go 1.17
