from tradeos.cli import main

main()
