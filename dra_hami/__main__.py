from dra_hami.cli import main

main()
