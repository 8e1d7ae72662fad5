import click


@click.group()
def main():
    """dra-hami"""
