module storegw

go 1.21
