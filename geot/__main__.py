from geot.cli import main

main()
