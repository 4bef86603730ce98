module pooltarget

go 1.21
