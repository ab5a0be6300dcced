from cfx.cli import main

main()
