module pionecho

go 1.19
